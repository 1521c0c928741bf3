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

	"github.com/rs/zerolog"
	"github.com/segd/segd/connectors"
	"github.com/segd/segd/engine"
	"github.com/segd/segd/examples"
	"github.com/segd/segd/internal/gen"
	"github.com/segd/segd/schemas"
)

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, code := parseDemoFlags(args, stderr)
	if o == nil {
		return code
	}
	log, err := newLogger(stderr, o.logFormat, o.logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "segd demo:", err)
		return 2
	}
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	dir, rulesNote, cleanup, err := o.prepareDir()
	if err != nil {
		fmt.Fprintln(stderr, "segd demo:", err)
		return 1
	}
	defer cleanup()
	topics := []string{engine.DefaultPurchasesTopic, engine.DefaultBrowsesTopic, engine.DefaultEngagementsTopic, engine.DefaultProfilesTopic, engine.DefaultChangesTopic, engine.DefaultDeadLetterTopic}
	broker, err := connectors.StartEmbeddedBroker(o.port, int32(o.partitions), topics...)
	if err != nil {
		fmt.Fprintln(stderr, "segd demo:", err)
		return 1
	}
	defer broker.Close()
	addr := broker.Addrs()[0]
	if o.apiAddr != "off" {
		o.apiAddr = freeAddr(o.apiAddr)
	}
	o.printBanner(stdout, addr, topics, rulesNote)

	printer := newChangePrinter(stdout, o.printRate)
	cfg, eng, err := o.newEngine(addr, dir, log, printer)
	if err != nil {
		fmt.Fprintln(stderr, "segd demo:", err)
		return 1
	}
	defer eng.Close()
	start := time.Now()
	g, snd, closeTraffic, err := o.newTraffic(addr, start)
	if err != nil {
		fmt.Fprintln(stderr, "segd demo:", err)
		return 1
	}
	defer closeTraffic()

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := o.sendTraffic(runCtx, stdout, snd, g, start); err != nil && runCtx.Err() == nil {
			errc <- fmt.Errorf("generator: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		printDemoStatus(runCtx, stdout, snd, eng, printer)
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
	return demoExit(stdout, stderr, eng, runErr, errc, start)
}

// demoExit reports how the demo ended and returns its exit code: a
// generator or engine failure is 1, a stop (Ctrl-C, --duration) 0.
func demoExit(stdout, stderr io.Writer, eng *engine.Engine, runErr error, errc <-chan error, start time.Time) int {
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

// demoOptions are segd demo's flags.
type demoOptions struct {
	rulesFile                                string
	port, partitions, customers              int
	history                                  time.Duration
	historyEvents, rate, liveRate, printRate int
	duration                                 time.Duration
	stateDir, logFormat, logLevel, apiAddr   string
}

// parseDemoFlags parses and checks the flags; nil with the exit code when
// they are wrong (or -h).
func parseDemoFlags(args []string, stderr io.Writer) (*demoOptions, int) {
	o := &demoOptions{}
	fs := flag.NewFlagSet("segd demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.rulesFile, "rules", "", "rules file (default: the demo's own, examples/rules.yaml built into the binary)")
	fs.IntVar(&o.port, "port", 0, "embedded broker port on 127.0.0.1 (0: a free port)")
	fs.IntVar(&o.partitions, "partitions", 4, "partitions per topic")
	fs.IntVar(&o.customers, "customers", 5000, "distinct customers")
	fs.DurationVar(&o.history, "history", 14*24*time.Hour, "simulated history replayed first, ending now")
	fs.IntVar(&o.historyEvents, "history-events", 60000, "events in the simulated history")
	fs.IntVar(&o.rate, "rate", 5000, "events per second while replaying history")
	fs.IntVar(&o.liveRate, "live-rate", 50, "events per second once history is done (event time = wall clock)")
	fs.DurationVar(&o.duration, "duration", 0, "stop after this long (0: until Ctrl-C)")
	fs.IntVar(&o.printRate, "print", 20, "segment changes printed per second at most (the rest are counted)")
	fs.StringVar(&o.stateDir, "state-dir", "", "state directory (default: a fresh temporary one)")
	fs.StringVar(&o.logFormat, "log-format", "console", "json or console")
	fs.StringVar(&o.logLevel, "log-level", "warn", "engine log level")
	fs.StringVar(&o.apiAddr, "api", "127.0.0.1:8080", "HTTP API, metrics and the page (off: none)")
	if err := fs.Parse(args); err != nil {
		return nil, 2
	}
	if err := firstError(intBetween("--port", o.port, 0, 65535), intBetween("--partitions", o.partitions, 1, maxPartitions), intBetween("--customers", o.customers, 1, maxCustomers), positiveDuration("--history", o.history), positiveInt("--history-events", o.historyEvents),
		intBetween("--rate", o.rate, 1, maxRate), intBetween("--live-rate", o.liveRate, 1, maxRate), nonNegativeDuration("--duration", o.duration), intBetween("--print", o.printRate, 0, maxRate)); err != nil {
		fmt.Fprintln(stderr, "segd demo:", err)
		return nil, 2
	}
	if o.rulesFile != "" {
		if _, err := os.Stat(o.rulesFile); err != nil {
			fmt.Fprintf(stderr, "segd demo: --rules: %v\n", err)
			return nil, 1
		}
	}
	return o, 0
}

// prepareDir returns the state directory (a fresh temporary one unless
// --state-dir) and, without --rules, writes the built-in rules there: a
// copy on disk lets a person edit them and reload (SIGHUP, or the file
// watcher).
func (o *demoOptions) prepareDir() (dir, rulesNote string, cleanup func(), err error) {
	dir, cleanup = o.stateDir, func() {}
	if dir == "" {
		if dir, err = os.MkdirTemp("", "segd-demo-"); err != nil {
			return "", "", nil, err
		}
		cleanup = func() { os.RemoveAll(dir) }
	}
	rulesNote = o.rulesFile
	if o.rulesFile == "" {
		o.rulesFile = filepath.Join(dir, "demo-rules.yaml")
		if err := os.WriteFile(o.rulesFile, examples.Rules, 0o644); err != nil {
			cleanup()
			return "", "", nil, err
		}
		rulesNote = "the built-in examples/rules.yaml, copied to " + o.rulesFile
	}
	return dir, rulesNote, cleanup, nil
}

// printBanner tells a person what runs where and how to follow it.
func (o *demoOptions) printBanner(w io.Writer, addr string, topics []string, rulesNote string) {
	fmt.Fprintf(w, "segd demo: embedded Kafka broker on %s (topics %s, %d partitions)\n", addr, strings.Join(topics, ", "), o.partitions)
	fmt.Fprintf(w, "  follow the changes from another terminal: segd changes --brokers %s\n", addr)
	if o.apiAddr != "off" {
		fmt.Fprintf(w, "  page http://%s/  API http://%s/v1/segments  metrics http://%s/metrics\n", o.apiAddr, o.apiAddr, o.apiAddr)
	}
	fmt.Fprintf(w, "  rules: %s (edit and send SIGHUP, or save: they reload live)\n", rulesNote)
	fmt.Fprintf(w, "  replaying %s of history (%d events, %d customers), then live traffic; Ctrl-C stops\n\n", o.history, o.historyEvents, o.customers)
}

// newEngine configures and opens the demo's engine over the embedded
// broker at addr, printing what it publishes.
func (o *demoOptions) newEngine(addr, dir string, log zerolog.Logger, printer *changePrinter) (*engine.Config, *engine.Engine, error) {
	cfg := &engine.Config{}
	cfg.Kafka.Brokers = []string{addr}
	cfg.Rules.File = o.rulesFile
	cfg.State.Dir = dir
	cfg.API.Addr = o.apiAddr
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	eng, err := engine.New(cfg, engine.Options{Logger: log, OnPublished: printer.published})
	if err != nil {
		return nil, nil, err
	}
	return cfg, eng, nil
}

// newTraffic makes the generator of the demo's customers (a history
// ending at start) and the sender that produces it to addr.
func (o *demoOptions) newTraffic(addr string, start time.Time) (*gen.Generator, *sender, func(), error) {
	g, err := gen.New(gen.Config{
		Customers:     o.customers,
		Start:         start.Add(-o.history).UnixMilli(),
		EventsPerHour: float64(o.historyEvents) / o.history.Hours(),
		Pacing:        gen.RealisticPacing(),
	})
	if err != nil {
		return nil, nil, nil, err
	}
	prod, err := connectors.NewProducer([]string{addr}, connectors.ProducerOptions{})
	if err != nil {
		return nil, nil, nil, err
	}
	snd, err := newSender(prod, false)
	if err != nil {
		prod.Close()
		return nil, nil, nil, err
	}
	return g, snd, func() { prod.Close() }, nil
}

// sendTraffic replays the history at --rate, then sends live traffic at
// --live-rate, event time = wall clock, until ctx ends.
func (o *demoOptions) sendTraffic(ctx context.Context, w io.Writer, snd *sender, g *gen.Generator, start time.Time) error {
	if err := snd.pace(ctx, g, o.rate, 0, start.UnixMilli()); err != nil || ctx.Err() != nil {
		return err
	}
	fmt.Fprintf(w, "-- history done (%d events); live traffic now, event time = wall clock\n", snd.sent.Load())
	return snd.paceLive(ctx, g, o.liveRate, 0)
}

// printDemoStatus prints a status line every 3 s until ctx ends.
func printDemoStatus(ctx context.Context, w io.Writer, snd *sender, eng *engine.Engine, printer *changePrinter) {
	t := time.NewTicker(3 * time.Second)
	defer t.Stop()
	var last engine.Progress
	lastAt := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			// sent: handed to Kafka, read before Progress: what was
			// applied was sent first, so the line's lag (sent - applied
			// - dead letters) is never negative.
			sent := snd.offered.Load()
			p := eng.Progress()
			secs := now.Sub(lastAt).Seconds()
			fmt.Fprintf(w, "-- status: sent %d, applied %.0f (%.0f ev/s), lag %.0f, ENTER %.0f EXIT %.0f, published %.0f, outbox %.0f, dead letters %.0f, printed %d\n",
				sent, p.Events, (p.Events-last.Events)/secs, demoLag(sent, p), p.Enters, p.Exits, p.Published, p.OutboxDepth, p.DeadLetters, printer.printed.Load())
			last, lastAt = p, now
		}
	}
}

// demoLag is how many events handed to Kafka the engine has neither
// applied nor dead-lettered. Events and dead letters are read after
// offered, so it is negative only if the engine counted an event twice.
func demoLag(offered uint64, p engine.Progress) float64 {
	return float64(offered) - p.Events - p.DeadLetters
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
		// The address it got: port 0 becomes the port the page is on.
		defer ln.Close()
		return ln.Addr().String()
	}
	ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return addr // let the engine report the error
	}
	defer ln.Close()
	return ln.Addr().String()
}
