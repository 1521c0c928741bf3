package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/engine"
)

// kafkaTarget is the cluster a command writes to: --brokers, else the
// kafka.brokers of --config (segd run's config file, SEGD_* variables
// applied), with the config's TLS and SASL. Without --config the
// connection is plaintext, as to a local broker.
type kafkaTarget struct {
	brokers []string
	sec     *connectors.Security // nil: plaintext
	cfg     *engine.Config       // nil without --config
}

// loadKafkaTarget reads --brokers and --config. Its errors name what is
// missing; they never contain the SASL password (engine.Config.Security).
func loadKafkaTarget(brokers, configPath string) (kafkaTarget, error) {
	var t kafkaTarget
	if brokers != "" {
		for _, b := range strings.Split(brokers, ",") {
			if b = strings.TrimSpace(b); b != "" {
				t.brokers = append(t.brokers, b)
			}
		}
	}
	if configPath != "" {
		cfg, err := engine.LoadConfig(configPath, os.Environ())
		if err != nil {
			return t, err
		}
		if t.brokers == nil {
			t.brokers = cfg.Kafka.Brokers
		}
		if t.sec, err = cfg.Security(); err != nil {
			return t, err
		}
		t.cfg = cfg
	}
	if len(t.brokers) == 0 {
		return t, fmt.Errorf("give --brokers or --config")
	}
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
