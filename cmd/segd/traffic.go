package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/engine"
	"github.com/segd/segd/internal/gen"
	"github.com/segd/segd/schemas"
)

// inputTopics maps event types to the default topic names.
var inputTopics = map[schemas.EventType]string{
	schemas.EventPurchase:   engine.DefaultPurchasesTopic,
	schemas.EventBrowse:     engine.DefaultBrowsesTopic,
	schemas.EventEngagement: engine.DefaultEngagementsTopic,
	schemas.EventProfile:    engine.DefaultProfilesTopic,
}

// sender encodes generated events and writes them in batches, keyed by
// customer id (murmur2 partitioning) and stamped with their event time.
type sender struct {
	prod   *connectors.Producer
	codecs *schemas.Codecs
	json   bool
	batch  []connectors.Message
	sent   atomic.Uint64
}

func newSender(prod *connectors.Producer, json bool) (*sender, error) {
	cs, err := schemas.NewCodecs()
	if err != nil {
		return nil, err
	}
	return &sender{prod: prod, codecs: cs, json: json}, nil
}

func (s *sender) add(e *schemas.Event) error {
	var value []byte
	if s.json {
		value = schemas.AppendJSON(nil, e)
	} else {
		var err error
		value, err = s.codecs[e.Type].AppendEncode(nil, e)
		if err != nil {
			return err
		}
	}
	s.batch = append(s.batch, connectors.Message{Topic: inputTopics[e.Type], Key: []byte(e.CustomerID), Value: value, Time: time.UnixMilli(e.Time)})
	return nil
}

func (s *sender) flush(ctx context.Context) error {
	if len(s.batch) == 0 {
		return nil
	}
	if err := s.prod.Write(ctx, s.batch...); err != nil {
		return fmt.Errorf("send %d events: %w", len(s.batch), err)
	}
	s.sent.Add(uint64(len(s.batch)))
	s.batch = s.batch[:0]
	return nil
}

// pace sends events from g at about rate per second until the generator
// ends, count events were sent (0: no limit), the generator's clock passes
// until (0: no limit) or ctx is done. With live set, event time follows the
// wall clock.
func (s *sender) pace(ctx context.Context, g *gen.Generator, rate int, count uint64, until int64, live bool) error {
	const tick = 50 * time.Millisecond
	perTick := max(1, rate*int(tick)/int(time.Second))
	t := time.NewTicker(tick)
	defer t.Stop()
	var e schemas.Event
	for {
		for i := 0; i < perTick; i++ {
			if (count > 0 && s.sent.Load()+uint64(len(s.batch)) >= count) || (until > 0 && g.Clock() >= until) {
				return s.flush(ctx)
			}
			if live {
				g.SetClock(time.Now().UnixMilli())
			}
			if !g.Next(&e) {
				return s.flush(ctx)
			}
			if err := s.add(&e); err != nil {
				return err
			}
		}
		if err := s.flush(ctx); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
