package connectors

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// Security is how segd authenticates to Kafka and encrypts the connection.
// A nil *Security means plaintext without authentication.
type Security struct {
	// TLS, if set, encrypts every connection.
	TLS *tls.Config
	// SASL, if set, authenticates every connection.
	SASL sasl.Mechanism
}

// SecurityOptions describes Security in configuration terms. Secrets are
// read here and kept only inside the mechanism; nothing here is logged.
type SecurityOptions struct {
	TLS                bool
	CAFile             string // PEM; default: the system roots
	CertFile, KeyFile  string // PEM client certificate (mutual TLS)
	ServerName         string // default: the broker's host name
	InsecureSkipVerify bool

	// Mechanism is "", "plain", "scram-sha-256" or "scram-sha-512".
	Mechanism string
	Username  string
	Password  string
}

// NewSecurity builds a Security from opts; nil when opts asks for neither
// TLS nor SASL.
func NewSecurity(opts SecurityOptions) (*Security, error) {
	var s Security
	if opts.TLS {
		c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: opts.ServerName, InsecureSkipVerify: opts.InsecureSkipVerify}
		if opts.CAFile != "" {
			pem, err := os.ReadFile(opts.CAFile)
			if err != nil {
				return nil, fmt.Errorf("tls ca file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("tls ca file %s: no PEM certificate in it", opts.CAFile)
			}
			c.RootCAs = pool
		}
		if (opts.CertFile == "") != (opts.KeyFile == "") {
			return nil, errors.New("tls: cert file and key file go together")
		}
		if opts.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(opts.CertFile, opts.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("tls client certificate: %w", err)
			}
			c.Certificates = []tls.Certificate{cert}
		}
		s.TLS = c
	}
	switch strings.ToLower(opts.Mechanism) {
	case "":
	case "plain":
		s.SASL = plain.Mechanism{Username: opts.Username, Password: opts.Password}
	case "scram-sha-256", "scram-sha-512":
		algo := scram.SHA256
		if strings.HasSuffix(opts.Mechanism, "512") {
			algo = scram.SHA512
		}
		m, err := scram.Mechanism(algo, opts.Username, opts.Password)
		if err != nil {
			return nil, fmt.Errorf("sasl %s: %w", opts.Mechanism, err)
		}
		s.SASL = m
	default:
		return nil, fmt.Errorf("sasl mechanism %q: want plain, scram-sha-256 or scram-sha-512", opts.Mechanism)
	}
	if s.TLS == nil && s.SASL == nil {
		return nil, nil
	}
	return &s, nil
}

// dialer returns a kafka-go Dialer with the security applied.
func (s *Security) dialer() *kafka.Dialer {
	d := &kafka.Dialer{Timeout: 10 * time.Second, DualStack: true}
	if s != nil {
		d.TLS = s.TLS
		d.SASLMechanism = s.SASL
	}
	return d
}

// transport returns a kafka-go Transport (Writer, Client) with the
// security applied.
func (s *Security) transport() *kafka.Transport {
	t := &kafka.Transport{DialTimeout: 10 * time.Second}
	if s != nil {
		t.TLS = s.TLS
		t.SASL = s.SASL
	}
	return t
}
