package main

import (
	"context"
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
	// topics and json say where each event type goes and whether it is
	// written as JSON (else plain Avro).
	topics map[schemas.EventType]string
	json   map[schemas.EventType]bool
	batch  []connectors.Message
	sent   atomic.Uint64 // acknowledged by Kafka
	// offered counts events handed to the producer, acknowledged or not:
	// a consumer may read and apply a batch before its produce call
	// returns, so a lag taken from sent could go below zero.
	offered atomic.Uint64
}

// newSender writes every event type to its default topic, as JSON when
// json is set, else as plain Avro.
func newSender(prod *connectors.Producer, json bool) (*sender, error) {
	cs, err := schemas.NewCodecs()
	if err != nil {
		return nil, err
	}
	s := &sender{prod: prod, codecs: cs, topics: inputTopics, json: map[schemas.EventType]bool{}}
	for t := range inputTopics {
		s.json[t] = json
	}
	return s, nil
}

func (s *sender) add(e *schemas.Event) error {
	var value []byte
	if s.json[e.Type] {
		value = schemas.AppendJSON(nil, e)
	} else {
		var err error
		value, err = s.codecs[e.Type].AppendEncode(nil, e)
		if err != nil {
			return err
		}
	}
	s.batch = append(s.batch, connectors.Message{Topic: s.topics[e.Type], Key: []byte(e.CustomerID), Value: value, Time: time.UnixMilli(e.Time)})
	return nil
}

func (s *sender) flush(ctx context.Context) error {
	if len(s.batch) == 0 {
		return nil
	}
	s.offered.Add(uint64(len(s.batch)))
	if err := s.prod.Write(ctx, s.batch...); err != nil {
		return err // the producer's error says how many records
	}
	s.sent.Add(uint64(len(s.batch)))
	s.batch = s.batch[:0]
	return nil
}

// pace sends events from g at about rate per second, stamped with the
// generator's simulated clock, until the generator ends, count events were
// sent (0: no limit), the clock passes until (0: no limit) or ctx is done.
// For history: event time runs as fast as the configured traffic says.
func (s *sender) pace(ctx context.Context, g *gen.Generator, rate int, count uint64, until int64) error {
	return s.loop(ctx, rate, count, func(e *schemas.Event, _ time.Time) bool {
		if until > 0 && g.Clock() >= until {
			return false
		}
		return g.Next(e)
	})
}

// paceLive sends live traffic: each event is stamped with the wall clock
// when it is made, never ahead of it, at about rate per second, until
// count events were sent (0: no limit) or ctx is done. Who acts is the
// generator's choice; with pacing on, a higher rate means more customers
// active at once, not customers acting faster.
func (s *sender) paceLive(ctx context.Context, g *gen.Generator, rate int, count uint64) error {
	return s.loop(ctx, rate, count, func(e *schemas.Event, now time.Time) bool {
		g.NextAt(e, now.UnixMilli())
		return true
	})
}

// loop calls next for about rate events a second, in ticks, sending each
// tick's events as one batch. Events due during a stall (a slow broker)
// are caught up for at most a second's worth, so the rate stays an
// average and never becomes a burst.
func (s *sender) loop(ctx context.Context, rate int, count uint64, next func(*schemas.Event, time.Time) bool) error {
	const tick = 50 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	var e schemas.Event
	start := time.Now()
	var made int64
	for {
		now := time.Now()
		due := int64(now.Sub(start).Seconds()*float64(rate)) + 1 - made
		if due > int64(rate) {
			made += due - int64(rate)
			due = int64(rate)
		}
		for ; due > 0; due-- {
			if count > 0 && s.sent.Load()+uint64(len(s.batch)) >= count {
				return s.flush(ctx)
			}
			if !next(&e, now) {
				return s.flush(ctx)
			}
			if err := s.add(&e); err != nil {
				return err
			}
			made++
		}
		if err := s.flush(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
