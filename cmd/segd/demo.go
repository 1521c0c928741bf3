package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/engine"
	"github.com/segd/segd/examples"
	"github.com/segd/segd/internal/gen"
	"github.com/segd/segd/schemas"
)

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("segd demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rulesFile := fs.String("rules", "", "rules file (default: the demo's own, examples/rules.yaml built into the binary)")
	port := fs.Int("port", 0, "embedded broker port on 127.0.0.1 (0: a free port)")
	partitions := fs.Int("partitions", 4, "partitions per topic")
	customers := fs.Int("customers", 5000, "distinct customers")
	history := fs.Duration("history", 14*24*time.Hour, "simulated history replayed first, ending now")
	historyEvents := fs.Int("history-events", 60000, "events in the simulated history")
	rate := fs.Int("rate", 5000, "events per second while replaying history")
	liveRate := fs.Int("live-rate", 50, "events per second once history is done (event time = wall clock)")
	duration := fs.Duration("duration", 0, "stop after this long (0: until Ctrl-C)")
	printRate := fs.Int("print", 20, "segment changes printed per second at most (the rest are counted)")
	stateDir := fs.String("state-dir", "", "state directory (default: a fresh temporary one)")
	logFormat := fs.String("log-format", "console", "json or console")
	logLevel := fs.String("log-level", "warn", "engine log level")
	apiAddr := fs.String("api", "127.0.0.1:8080", "HTTP API, metrics and the page (off: none)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := firstError(intBetween("--port", *port, 0, 65535), intBetween("--partitions", *partitions, 1, maxPartitions), intBetween("--customers", *customers, 1, maxCustomers), positiveDuration("--history", *history), positiveInt("--history-events", *historyEvents),
		intBetween("--rate", *rate, 1, maxRate), intBetween("--live-rate", *liveRate, 1, maxRate), nonNegativeDuration("--duration", *duration), intBetween("--print", *printRate, 0, maxRate)); err != nil {
		fmt.Fprintln(stderr, "segd demo:", err)
		return 2
	}
	if *rulesFile != "" {
		if _, err := os.Stat(*rulesFile); err != nil {
			fmt.Fprintf(stderr, "segd demo: --rules: %v\n", err)
			return 1
		}
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "segd demo:", err)
		return 2
	}
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	dir := *stateDir
	if dir == "" {
		dir, err = os.MkdirTemp("", "segd-demo-")
		if err != nil {
			fmt.Fprintln(stderr, "segd demo:", err)
			return 1
		}
		defer os.RemoveAll(dir)
	}
	rulesNote := *rulesFile
	if *rulesFile == "" {
		// The demo's rules are built in; a copy on disk lets a person edit
		// them and reload (SIGHUP, or the file watcher).
		*rulesFile = filepath.Join(dir, "demo-rules.yaml")
		if err := os.WriteFile(*rulesFile, examples.Rules, 0o644); err != nil {
			fmt.Fprintln(stderr, "segd demo:", err)
			return 1
		}
		rulesNote = "the built-in examples/rules.yaml, copied to " + *rulesFile
	}

	topics := []string{engine.DefaultPurchasesTopic, engine.DefaultBrowsesTopic, engine.DefaultEngagementsTopic, engine.DefaultProfilesTopic, engine.DefaultChangesTopic, engine.DefaultDeadLetterTopic}
	broker, err := connectors.StartEmbeddedBroker(*port, int32(*partitions), topics...)
	if err != nil {
		fmt.Fprintln(stderr, "segd demo:", err)
		return 1
	}
	defer broker.Close()
	addr := broker.Addrs()[0]
	fmt.Fprintf(stdout, "segd demo: embedded Kafka broker on %s (topics %s, %d partitions)\n", addr, strings.Join(topics, ", "), *partitions)
	fmt.Fprintf(stdout, "  follow the changes from another terminal: segd changes --brokers %s\n", addr)
	if *apiAddr != "off" {
		*apiAddr = freeAddr(*apiAddr)
		fmt.Fprintf(stdout, "  page http://%s/  API http://%s/v1/segments  metrics http://%s/metrics\n", *apiAddr, *apiAddr, *apiAddr)
	}
	fmt.Fprintf(stdout, "  rules: %s (edit and send SIGHUP, or save: they reload live)\n", rulesNote)
	fmt.Fprintf(stdout, "  replaying %s of history (%d events, %d customers), then live traffic; Ctrl-C stops\n\n", *history, *historyEvents, *customers)

	cfg := &engine.Config{}
	cfg.Kafka.Brokers = []string{addr}
	cfg.Rules.File = *rulesFile
	cfg.State.Dir = dir
	cfg.API.Addr = *apiAddr
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "segd demo:", err)
		return 1
	}
	printer := newChangePrinter(stdout, *printRate)
	eng, err := engine.New(cfg, engine.Options{Logger: log, OnPublished: printer.published})
	if err != nil {
		fmt.Fprintln(stderr, "segd demo:", err)
		return 1
	}
	defer eng.Close()

	start := time.Now()
	g, err := gen.New(gen.Config{
		Customers:     *customers,
		Start:         start.Add(-*history).UnixMilli(),
		EventsPerHour: float64(*historyEvents) / history.Hours(),
		Pacing:        gen.RealisticPacing(),
	})
	if err != nil {
		fmt.Fprintln(stderr, "segd demo:", err)
		return 1
	}
	prod, err := connectors.NewProducer([]string{addr}, connectors.ProducerOptions{})
	if err != nil {
		fmt.Fprintln(stderr, "segd demo:", err)
		return 1
	}
	defer prod.Close()
	snd, err := newSender(prod, false)
	if err != nil {
		fmt.Fprintln(stderr, "segd demo:", err)
		return 1
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := snd.pace(runCtx, g, *rate, 0, start.UnixMilli())
		if err == nil && runCtx.Err() == nil {
			fmt.Fprintf(stdout, "-- history done (%d events); live traffic now, event time = wall clock\n", snd.sent.Load())
			err = snd.paceLive(runCtx, g, *liveRate, 0)
		}
		if err != nil && runCtx.Err() == nil {
			errc <- fmt.Errorf("generator: %w", err)
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(3 * time.Second)
		defer t.Stop()
		var last engine.Progress
		lastAt := time.Now()
		for {
			select {
			case <-runCtx.Done():
				return
			case now := <-t.C:
				sent := snd.sent.Load()
				p := eng.Progress()
				secs := now.Sub(lastAt).Seconds()
				fmt.Fprintf(stdout, "-- status: sent %d, applied %.0f (%.0f ev/s), lag %.0f, ENTER %.0f EXIT %.0f, published %.0f, outbox %.0f, dead letters %.0f, printed %d\n",
					sent, p.Events, (p.Events-last.Events)/secs, float64(sent)-p.Events-p.DeadLetters, p.Enters, p.Exits, p.Published, p.OutboxDepth, p.DeadLetters, printer.printed.Load())
				last, lastAt = p, now
			}
		}
	}()
	srv, stopAPI, err := startAPI(eng, cfg, log)
	if err != nil {
		stop()
		wg.Wait()
		fmt.Fprintln(stderr, "segd demo:", err)
		return 1
	}
	defer stopAPI()
	stopHangup := reloadOnHangup(runCtx, eng, srv, log, func(res *engine.ReloadResult, err error) {
		if err != nil {
			fmt.Fprintf(stdout, "-- rules reload (SIGHUP) failed; the running rules stay: %v\n", err)
			return
		}
		fmt.Fprintf(stdout, "-- rules reloaded (SIGHUP): version %d, %d changes\n", res.Version, res.Changes)
	})
	runErr := eng.Run(runCtx)
	stopHangup()
	stop()
	wg.Wait()
	select {
	case err := <-errc:
		fmt.Fprintln(stderr, "segd demo:", err)
		return 1
	default:
	}
	if runErr != nil && !errors.Is(runErr, context.Canceled) && !errors.Is(runErr, context.DeadlineExceeded) {
		fmt.Fprintln(stderr, "segd demo:", runErr)
		return 1
	}
	p := eng.Progress()
	fmt.Fprintf(stdout, "segd demo: stopped after %s: %.0f events applied, %.0f ENTER, %.0f EXIT\n", time.Since(start).Round(time.Second), p.Events, p.Enters, p.Exits)
	return 0
}

// changePrinter prints published segment changes, at most perSecond a
// second so a burst does not flood the terminal.
type changePrinter struct {
	w         io.Writer
	perSecond int
	mu        sync.Mutex
	second    int64
	inSecond  int
	printed   atomic.Int64
	change    schemas.SegmentChange
}

func newChangePrinter(w io.Writer, perSecond int) *changePrinter {
	return &changePrinter{w: w, perSecond: perSecond}
}

func (p *changePrinter) published(topic string, key, value []byte) {
	if topic != engine.DefaultChangesTopic {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now().Unix()
	if now != p.second {
		p.second, p.inSecond = now, 0
	}
	if p.inSecond >= p.perSecond {
		return
	}
	if err := schemas.DecodeSegmentChangeAvro(value, &p.change); err != nil {
		fmt.Fprintf(p.w, "undecodable change: %v\n", err)
		return
	}
	p.inSecond++
	p.printed.Add(1)
	writeChangeLine(p.w, &p.change)
}

// freeAddr returns addr when it can be listened on, else a free loopback
// port, so that `make demo` works next to whatever already holds 8080.
func freeAddr(addr string) string {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		ln.Close()
		return addr
	}
	ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return addr // let the engine report the error
	}
	defer ln.Close()
	return ln.Addr().String()
}
