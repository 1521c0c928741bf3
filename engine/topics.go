package engine

import (
	"context"
	"fmt"
	"strings"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/rules"
)

// outputLayout is what segd creates its output topics with: the input
// topics' partition count and the replication of its own topics. Run sets
// it once it has read the cluster; a zero value means not running yet.
type outputLayout struct {
	partitions  int
	replication int
	// changelog is how the changelog topic's record batch limit cuts
	// commits and requests (changelog on only).
	changelog changelogLimits
}

// outputTopics returns every topic segd may write under rs, sorted and
// without repeats: the changes and dead-letter topics and each segment's
// own topic.
func (e *Engine) outputTopics(rs *rules.RuleSet) []string {
	seen := map[string]bool{}
	var out []string
	add := func(t string) {
		if t != "" && !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	add(e.cfg.Kafka.Topics.Changes)
	add(e.cfg.Kafka.Topics.DeadLetter)
	for _, s := range rs.Segments() {
		add(s.Topic)
	}
	return out
}

// ensureOutputTopics makes sure every topic segd may write under rs
// exists: it creates the missing ones (kafka.create_topics true, the
// default) or fails naming them. A publisher writing to a missing topic
// would otherwise retry forever while the partition's outbox grows.
func (e *Engine) ensureOutputTopics(ctx context.Context, rs *rules.RuleSet, layout outputLayout) error {
	topics := e.outputTopics(rs)
	missing, err := e.cluster().MissingTopics(ctx, topics)
	if err != nil {
		return fmt.Errorf("check output topics: %w", err)
	}
	if len(missing) == 0 {
		return nil
	}
	if e.cfg.Kafka.CreateTopics == "false" {
		return fmt.Errorf("output topic(s) %s do not exist and kafka.create_topics is false: create them (%d partitions, like the input topics) or set kafka.create_topics: true", strings.Join(missing, ", "), layout.partitions)
	}
	specs := make([]connectors.TopicSpec, len(missing))
	for i, t := range missing {
		specs[i] = connectors.TopicSpec{Name: t, Partitions: layout.partitions, Replication: layout.replication}
	}
	if err := e.cluster().EnsureTopics(ctx, specs); err != nil {
		return fmt.Errorf("create output topic(s) %s: %w", strings.Join(missing, ", "), err)
	}
	e.log.Info().Strs("topics", missing).Int("partitions", layout.partitions).Int("replication", layout.replication).Msg("created output topics")
	return nil
}
