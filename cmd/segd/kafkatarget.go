package main

import (
	"errors"
	"os"
	"strings"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/engine"
)

// kafkaTarget is the cluster a command talks to, as segd run's config
// names it: from --config (segd run's config file) and the SEGD_KAFKA_*
// environment of a running segd, which give the brokers, TLS, SASL and
// topics; --brokers names the brokers over both. With neither a config
// nor SEGD_KAFKA_* variables the connection is plaintext to --brokers, as
// to a local broker.
type kafkaTarget struct {
	brokers []string
	sec     *connectors.Security // nil: plaintext
	cfg     *engine.Config       // nil without --config or SEGD_KAFKA_*
}

// errNoTarget: neither --brokers, --config nor SEGD_KAFKA_BROKERS names a
// cluster (a usage error).
var errNoTarget = errors.New("give --brokers or --config (or set SEGD_KAFKA_BROKERS)")

// loadKafkaTarget reads --brokers, --config and the environment. Its
// errors name the key at fault; they never contain the SASL password
// (engine.Config.Security).
func loadKafkaTarget(brokers, configPath string) (kafkaTarget, error) {
	var t kafkaTarget
	environ := os.Environ()
	if configPath == "" && !engine.HasKafkaEnv(environ) {
		for _, b := range strings.Split(brokers, ",") {
			if b = strings.TrimSpace(b); b != "" {
				t.brokers = append(t.brokers, b)
			}
		}
		if len(t.brokers) == 0 {
			return t, errNoTarget
		}
		return t, nil
	}
	if brokers != "" {
		// Over the file and the environment: the last setting wins.
		environ = append(environ, engine.EnvName("kafka.brokers")+"="+brokers)
	} else if configPath == "" && !hasEnv(environ, engine.EnvName("kafka.brokers")) {
		// Some SEGD_KAFKA_* variable (a pod's SASL password) but no
		// brokers: the config file is missing, not kafka.brokers.
		return t, errNoTarget
	}
	cfg, err := engine.LoadClientConfig(configPath, environ)
	if err != nil {
		return t, err
	}
	if t.sec, err = cfg.Security(); err != nil {
		return t, err
	}
	t.brokers, t.cfg = cfg.Kafka.Brokers, cfg
	return t, nil
}

// producer makes a producer to the target.
func (t kafkaTarget) producer() (*connectors.Producer, error) {
	return connectors.NewProducer(t.brokers, connectors.ProducerOptions{Security: t.sec})
}

// cluster is the target for admin requests (creating topics).
func (t kafkaTarget) cluster() connectors.Cluster {
	return connectors.Cluster{Brokers: t.brokers, Security: t.sec}
}

// hasEnv reports whether environ sets name.
func hasEnv(environ []string, name string) bool {
	for _, kv := range environ {
		if k, _, _ := strings.Cut(kv, "="); k == name {
			return true
		}
	}
	return false
}
