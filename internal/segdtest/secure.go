package segdtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI is a test CA, valid for an hour, that signs certificates as PEM
// files in a directory: what a broker or an API demanding TLS serves, and
// what its clients trust or present.
type PKI struct {
	t      testing.TB
	dir    string
	caKey  *ecdsa.PrivateKey
	ca     *x509.Certificate
	CAFile string // the CA certificate, PEM: dir/<name>-ca.pem
	serial int64
}

// NewPKI makes a CA named name and writes its certificate to CAFile.
func NewPKI(t testing.TB, dir, name string) *PKI {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p := &PKI{t: t, dir: dir, caKey: key, ca: ca, CAFile: filepath.Join(dir, name+"-ca.pem"), serial: 1}
	if err := os.WriteFile(p.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// Issue signs a certificate for cn (a server's for 127.0.0.1 when server,
// else a client's) and writes it and its key to dir/cn.pem and
// dir/cn-key.pem. The certificate file is renamed into place, so a
// watcher never reads half of it.
func (p *PKI) Issue(cn string, server bool) (certFile, keyFile string, cert tls.Certificate) {
	p.t.Helper()
	p.serial++
	key := newKey(p.t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.serial), Subject: pkix.Name{CommonName: cn, Organization: []string{"segd test"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		p.t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		p.t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	certFile, keyFile = filepath.Join(p.dir, cn+".pem"), filepath.Join(p.dir, cn+"-key.pem")
	for _, err := range []error{os.WriteFile(certFile+".tmp", certPEM, 0o600), os.WriteFile(keyFile, keyPEM, 0o600), os.Rename(certFile+".tmp", certFile)} {
		if err != nil {
			p.t.Fatal(err)
		}
	}
	if cert, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		p.t.Fatal(err)
	}
	return certFile, keyFile, cert
}

// TestCA makes a CA and a server certificate for 127.0.0.1 in dir: what a
// broker that demands TLS serves (server), and the CA file its clients
// trust.
func TestCA(t testing.TB, dir string) (server tls.Certificate, caFile string) {
	t.Helper()
	p := NewPKI(t, dir, "segd-test")
	_, _, server = p.Issue("broker", true)
	return server, p.CAFile
}

// Roots is a pool holding the CA, for a client to trust.
func (p *PKI) Roots() *x509.CertPool {
	roots := x509.NewCertPool()
	roots.AddCert(p.ca)
	return roots
}
