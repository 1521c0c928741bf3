package engine

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestReloadDoesNotWaitForRestores: a rule reload goes through while a
// partition is being restored from the changelog (before, the reload lock
// was held across every restore of a rebalance, so a reload waited for
// whole restores).
func TestReloadDoesNotWaitForRestores(t *testing.T) {
	cfgA, cfgB := twoInstances(t, "reload-restore")
	a, stopA := runStoppable(t, cfgA)
	waitFor(t, 30*time.Second, "A to apply and publish every event", func() bool {
		p := a.Progress()
		return p.Events == 40 && p.OutboxDepth == 0
	})
	stopA() // hands over: A's changelog holds both partitions

	b, err := New(cfgB, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	entered := make(chan int32, 2)
	release := make(chan struct{})
	b.restoreHook = func(p int32) {
		entered <- p
		<-release
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	}()
	select {
	case <-entered:
	case <-time.After(60 * time.Second):
		close(release)
		t.Fatal("B restored nothing: its fresh store should restore from A's changelog")
	}
	reloaded := make(chan error, 1)
	go func() {
		_, err := b.Reload(context.Background())
		reloaded <- err
	}()
	select {
	case err := <-reloaded:
		if err != nil {
			close(release)
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		close(release)
		<-reloaded
		t.Fatal("the reload waited for a partition's restore")
	}
	close(release)
	waitFor(t, 60*time.Second, "B to run both partitions with A's state", func() bool {
		return len(b.ownedPartitions()) == 2 && b.ready.Load()
	})
}
