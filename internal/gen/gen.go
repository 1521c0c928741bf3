// Package gen generates realistic, deterministic customer traffic: browse
// sessions, purchases that follow them, campaign engagements and profile
// updates, with Zipf-skewed customer activity. It feeds the demo, `segd gen`
// and the benchmarks. Same Config, same events, always.
package gen

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/segd/segd/schemas"
)

// Config configures a Generator. Zero values mean the documented default.
type Config struct {
	// Seed makes the sequence reproducible. Default 1.
	Seed uint64
	// Customers is the number of distinct customers. Default 10000.
	Customers int
	// ZipfS is the skew of customer activity (> 1). Default 1.1.
	ZipfS float64
	// Start is the event time of the first event, Unix ms. Default
	// 2026-01-01T00:00:00Z.
	Start int64
	// EventsPerHour is the average traffic in simulated time. Default 2000.
	EventsPerHour float64
	// Duration ends the sequence after this much simulated time (ms); 0
	// never ends.
	Duration int64
	// Browse, Engagement and Purchase are the event mix; they are
	// normalised. Default 0.75, 0.15, 0.10.
	Browse, Engagement, Purchase float64
	// Pacing, when set, bounds how fast one customer acts (see Pacing).
	// Nil keeps the unpaced model: each event goes to a customer drawn
	// from the Zipf distribution, however short the time between events,
	// which the benchmarks rely on.
	Pacing *Pacing
}

// Pacing makes traffic realistic at any rate: customers act in sessions of
// a few events some seconds apart and rest for hours between sessions, so
// a higher rate means more customers active at once, never one customer
// acting faster. A customer drawn while in a session or resting is
// replaced by another; when the population has nobody free, it grows
// (new customers appear), up to MaxCustomers.
type Pacing struct {
	// EventGap is the mean time between a customer's events within a
	// session, ms (exponential, never under MinEventGap). Default 20 s.
	EventGap int64
	// MinEventGap is the shortest time between a customer's events, ms.
	// Default 3 s.
	MinEventGap int64
	// SessionEvents is the mean number of events in a session
	// (geometric, at most 4x the mean). Default 8.
	SessionEvents int
	// Rest is the mean time a customer rests after a session, ms
	// (uniform between half and 1.5x). Default 12 h.
	Rest int64
	// MaxCustomers bounds the population's growth. Default 10,000,000 or
	// Customers if larger. At the bound, a resting customer may start a
	// session early (never one in a session).
	MaxCustomers int
}

// RealisticPacing returns the documented default Pacing: sessions of about
// 8 events 20 s apart, 12 h of rest between them. One customer then makes
// at most a few sessions a day, whatever the traffic rate.
func RealisticPacing() *Pacing {
	p := &Pacing{}
	p.ensureDefaults(0)
	return p
}

func (p *Pacing) ensureDefaults(customers int) {
	if p.EventGap == 0 {
		p.EventGap = 20_000
	}
	if p.MinEventGap == 0 {
		p.MinEventGap = 3_000
	}
	if p.SessionEvents == 0 {
		p.SessionEvents = 8
	}
	if p.Rest == 0 {
		p.Rest = 12 * 3600_000
	}
	if p.MaxCustomers == 0 {
		p.MaxCustomers = max(10_000_000, customers)
	}
}

// EnsureDefaults fills zero fields.
func (c *Config) EnsureDefaults() {
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.Customers == 0 {
		c.Customers = 10000
	}
	if c.ZipfS == 0 {
		c.ZipfS = 1.1
	}
	if c.Start == 0 {
		c.Start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	}
	if c.EventsPerHour == 0 {
		c.EventsPerHour = 2000
	}
	if c.Browse == 0 && c.Engagement == 0 && c.Purchase == 0 {
		c.Browse, c.Engagement, c.Purchase = 0.75, 0.15, 0.10
	}
	if c.Pacing != nil {
		p := *c.Pacing // never write through the caller's pointer
		p.ensureDefaults(c.Customers)
		c.Pacing = &p
	}
}

// Validate reports every invalid field.
func (c *Config) Validate() error {
	var p []string
	if c.Customers < 1 || c.Customers > 100_000_000 {
		p = append(p, fmt.Sprintf("Customers (%d) must be between 1 and 100000000", c.Customers))
	}
	if c.ZipfS <= 1 {
		p = append(p, fmt.Sprintf("ZipfS (%g) must be > 1", c.ZipfS))
	}
	if c.EventsPerHour <= 0 {
		p = append(p, fmt.Sprintf("EventsPerHour (%g) must be > 0", c.EventsPerHour))
	}
	if c.Duration < 0 {
		p = append(p, fmt.Sprintf("Duration (%d) must be >= 0", c.Duration))
	}
	if c.Browse < 0 || c.Engagement < 0 || c.Purchase < 0 || c.Browse+c.Engagement+c.Purchase <= 0 {
		p = append(p, fmt.Sprintf("mix (browse %g, engagement %g, purchase %g) must be non-negative with a positive sum", c.Browse, c.Engagement, c.Purchase))
	}
	if pc := c.Pacing; pc != nil {
		if pc.EventGap < 1 || pc.MinEventGap < 0 || pc.MinEventGap > pc.EventGap {
			p = append(p, fmt.Sprintf("Pacing.EventGap (%d ms) must be >= 1 and >= Pacing.MinEventGap (%d ms, >= 0)", pc.EventGap, pc.MinEventGap))
		}
		if pc.SessionEvents < 1 || pc.SessionEvents > 1000 {
			p = append(p, fmt.Sprintf("Pacing.SessionEvents (%d) must be between 1 and 1000", pc.SessionEvents))
		}
		if pc.Rest < 0 {
			p = append(p, fmt.Sprintf("Pacing.Rest (%d ms) must be >= 0", pc.Rest))
		}
		if pc.MaxCustomers < c.Customers || pc.MaxCustomers > 100_000_000 {
			p = append(p, fmt.Sprintf("Pacing.MaxCustomers (%d) must be between Customers (%d) and 100000000", pc.MaxCustomers, c.Customers))
		}
	}
	if len(p) > 0 {
		return fmt.Errorf("gen config: %s", strings.Join(p, "; "))
	}
	return nil
}

// Catalog values.
var (
	Categories = []string{"shoes", "apparel", "electronics", "home", "beauty", "toys", "books", "sports", "grocery", "jewelry"}
	countries  = []struct {
		name     string
		currency string
		weight   float64
	}{{"United Kingdom", "GBP", 0.55}, {"Germany", "EUR", 0.12}, {"France", "EUR", 0.10}, {"United States", "USD", 0.10}, {"Spain", "EUR", 0.06}, {"Netherlands", "EUR", 0.04}, {"Ireland", "EUR", 0.03}}
	tiers     = []string{"bronze", "silver", "gold"}
	pages     = []string{"home", "category", "product", "product", "search", "cart", "checkout"}
	campaigns = []string{"welcome-series", "spring-sale", "summer-sale", "back-to-school", "black-friday", "winter-gifts", "loyalty-news", "new-arrivals"}
)

type customer struct {
	seen        bool
	country     uint8
	favorite    uint8
	lastAt      int64
	session     uint32
	sessionCat  uint8
	sessionStep uint8
	consent     bool
	// Pacing: events left in the current session (0: not in one), when
	// the next is due, and when a rest ends.
	left      uint16
	nextAt    int64
	restUntil int64
}

// Generator produces events. Not safe for concurrent use.
type Generator struct {
	cfg      Config
	rng      *rand.Rand
	zipf     *rand.Zipf
	custs    []customer
	ids      []string
	clock    int64
	n        uint64
	pending  schemas.Event
	hasPend  bool
	mean     float64 // ms between events
	pBrowse  float64
	pEngage  float64
	idPrefix string
	sessions uint32
	nextID   uint64
	buf      []byte
	width    int
	// Pacing only: customers in a session, by when their next event is
	// due, and a rotating cursor for finding a free one.
	due    dueHeap
	cursor int
}

// New returns a Generator.
func New(cfg Config) (*Generator, error) {
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	g := &Generator{
		cfg:      cfg,
		rng:      rng,
		zipf:     rand.NewZipf(rng, cfg.ZipfS, 1, uint64(cfg.Customers-1)),
		custs:    make([]customer, cfg.Customers),
		ids:      make([]string, cfg.Customers),
		clock:    cfg.Start,
		mean:     3600_000 / cfg.EventsPerHour,
		idPrefix: "g" + strconv.FormatUint(cfg.Seed, 10) + "-",
	}
	sum := cfg.Browse + cfg.Engagement + cfg.Purchase
	g.pBrowse = cfg.Browse / sum
	g.pEngage = g.pBrowse + cfg.Engagement/sum
	width := len(strconv.Itoa(cfg.Customers))
	width = max(width, 7)
	g.width = width
	// Customer ids are a permutation of indexes, so the most active
	// customers are spread over the id space (and partitions).
	perm := rng.Perm(cfg.Customers)
	for i := range g.ids {
		g.ids[i] = fmt.Sprintf("c%0*d", width, perm[i])
	}
	for i := range g.custs {
		c := &g.custs[i]
		c.country = uint8(pickWeighted(rng))
		c.favorite = uint8(rng.IntN(len(Categories)))
		c.consent = rng.Float64() < 0.85
	}
	return g, nil
}

func pickWeighted(rng *rand.Rand) int {
	x := rng.Float64()
	for i, c := range countries {
		if x < c.weight {
			return i
		}
		x -= c.weight
	}
	return 0
}

// Clock returns the event time of the last event.
func (g *Generator) Clock() int64 { return g.clock }

// SetClock moves the generator's clock forward to t (Unix ms); the next
// event is stamped after it. Earlier t is ignored: time never runs back.
func (g *Generator) SetClock(t int64) {
	if t > g.clock {
		g.clock = t
	}
}

// Count returns how many events were generated.
func (g *Generator) Count() uint64 { return g.n }

// CustomerID returns the id of customer index i (0 is the most active).
func (g *Generator) CustomerID(i int) string { return g.ids[i] }

// eventID returns a new unique id.
func (g *Generator) eventID() string {
	g.nextID++
	g.buf = append(g.buf[:0], g.idPrefix...)
	g.buf = strconv.AppendUint(g.buf, g.nextID, 10)
	return string(g.buf)
}

// Next fills e with the next event and reports whether there is one.
// Event times never decrease; the time between events is drawn from the
// configured rate. A customer's first event is preceded by a profile
// event.
func (g *Generator) Next(e *schemas.Event) bool {
	if g.hasPend {
		g.popPending(e)
		return true
	}
	step := int64(g.rng.ExpFloat64() * g.mean)
	if g.cfg.Duration > 0 && g.clock+step > g.cfg.Start+g.cfg.Duration {
		return false
	}
	g.clock += step
	g.next(e)
	return true
}

// NextAt fills e with the next event, stamped at t (Unix ms) or at the
// generator's clock if that is later: for live traffic, where the caller
// decides when events happen (t = the wall clock when it sends) and the
// generator decides who acts and how. It ignores Duration.
func (g *Generator) NextAt(e *schemas.Event, t int64) {
	if g.hasPend {
		g.popPending(e)
		return
	}
	g.SetClock(t)
	g.next(e)
}

func (g *Generator) popPending(e *schemas.Event) {
	g.hasPend = false
	e.Reset()
	cats, pids, attrs := e.Categories, e.ProductIDs, e.Attributes
	*e = g.pending
	e.Categories = append(cats, g.pending.Categories...)
	e.ProductIDs = append(pids, g.pending.ProductIDs...)
	e.Attributes = attrs
	g.n++
}

// next generates an event at g.clock.
func (g *Generator) next(e *schemas.Event) {
	idx := g.pick()
	c := &g.custs[idx]
	e.Reset()
	g.n++
	if !c.seen {
		c.seen = true
		g.profile(e, idx, true)
		// The activity that made the customer appear follows.
		g.activity(&g.pending, idx)
		g.hasPend = true
		if g.pending.Type == schemas.EventPurchase && g.cfg.Pacing != nil && c.left > 0 {
			g.rest(c)
		}
		return
	}
	if g.rng.Float64() < 0.002 {
		g.profile(e, idx, false)
		return
	}
	g.activity(e, idx)
	if e.Type == schemas.EventPurchase && g.cfg.Pacing != nil && c.left > 0 {
		g.rest(c) // a session ends with the order
	}
}

// pick chooses who acts at g.clock: unpaced, a Zipf draw; paced, the
// customer whose session event is most overdue, else a free customer
// starting a session.
func (g *Generator) pick() int {
	pc := g.cfg.Pacing
	if pc == nil {
		return int(g.zipf.Uint64())
	}
	idx := -1
	for len(g.due) > 0 && g.due[0].at <= g.clock {
		d := g.due.pop()
		if c := &g.custs[d.idx]; c.left > 0 && c.nextAt == d.at {
			idx = int(d.idx)
			break
		}
	}
	if idx < 0 {
		idx = g.freeCustomer()
		c := &g.custs[idx]
		// Geometric session length with the configured mean, capped.
		mean := float64(pc.SessionEvents)
		n := 1 + int(g.rng.ExpFloat64()*(mean-1)+0.5)
		c.left = uint16(min(n, 4*pc.SessionEvents))
	}
	c := &g.custs[idx]
	c.left--
	if c.left == 0 {
		g.rest(c)
		return idx
	}
	c.nextAt = g.clock + max(pc.MinEventGap, int64(g.rng.ExpFloat64()*float64(pc.EventGap)))
	g.due.push(dueEntry{at: c.nextAt, idx: int32(idx)})
	return idx
}

// rest ends c's session.
func (g *Generator) rest(c *customer) {
	pc := g.cfg.Pacing
	c.left = 0
	c.restUntil = g.clock + pc.Rest/2 + int64(g.rng.Float64()*float64(pc.Rest))
}

// freeCustomer returns a customer in no session and not resting: a Zipf
// draw if one of a few is free, else the next free one from a rotating
// cursor, else a new customer (the population grows), else, at
// MaxCustomers, one cut short in its rest.
func (g *Generator) freeCustomer() int {
	free := func(i int) bool { c := &g.custs[i]; return c.left == 0 && c.restUntil <= g.clock }
	for range 8 {
		if i := int(g.zipf.Uint64()); free(i) {
			return i
		}
	}
	for range 64 {
		g.cursor = (g.cursor + 1) % len(g.custs)
		if free(g.cursor) {
			return g.cursor
		}
	}
	if len(g.custs) < g.cfg.Pacing.MaxCustomers {
		return g.grow()
	}
	for {
		if i := int(g.rng.IntN(len(g.custs))); g.custs[i].left == 0 {
			return i
		}
	}
}

// grow adds a customer; ids continue after the initial population's.
func (g *Generator) grow() int {
	i := len(g.custs)
	g.custs = append(g.custs, customer{
		country:  uint8(pickWeighted(g.rng)),
		favorite: uint8(g.rng.IntN(len(Categories))),
		consent:  g.rng.Float64() < 0.85,
	})
	g.ids = append(g.ids, fmt.Sprintf("c%0*d", g.width, i))
	return i
}

// Customers returns the population's size: Config.Customers, or more once
// pacing made it grow.
func (g *Generator) Customers() int { return len(g.custs) }

func (g *Generator) profile(e *schemas.Event, idx int, first bool) {
	c := &g.custs[idx]
	e.Type = schemas.EventProfile
	e.CustomerID = g.ids[idx]
	e.EventID = g.eventID()
	e.Time = g.clock
	if first {
		e.Attributes = append(e.Attributes,
			schemas.Attribute{Name: "country", Value: schemas.String(countries[c.country].name)},
			schemas.Attribute{Name: "birth_year", Value: schemas.Number(float64(1950 + g.rng.IntN(55)))},
			schemas.Attribute{Name: "consent_marketing", Value: schemas.Bool(c.consent)},
			schemas.Attribute{Name: "loyalty_tier", Value: schemas.String(tiers[g.rng.IntN(len(tiers))])},
		)
		return
	}
	if g.rng.IntN(2) == 0 {
		c.consent = !c.consent
		e.Attributes = append(e.Attributes, schemas.Attribute{Name: "consent_marketing", Value: schemas.Bool(c.consent)})
	} else {
		e.Attributes = append(e.Attributes, schemas.Attribute{Name: "loyalty_tier", Value: schemas.String(tiers[g.rng.IntN(len(tiers))])})
	}
}

func (g *Generator) activity(e *schemas.Event, idx int) {
	c := &g.custs[idx]
	e.Reset()
	e.CustomerID = g.ids[idx]
	e.EventID = g.eventID()
	e.Time = g.clock
	// A gap of over 30 minutes starts a new session.
	if g.clock-c.lastAt > 30*60*1000 || c.session == 0 {
		g.sessions++
		c.session = g.sessions
		c.sessionStep = 0
		if g.rng.Float64() < 0.6 {
			c.sessionCat = c.favorite
		} else {
			c.sessionCat = uint8(g.rng.IntN(len(Categories)))
		}
	}
	c.lastAt = g.clock
	x := g.rng.Float64()
	switch {
	case x < g.pBrowse:
		e.Type = schemas.EventBrowse
		e.Channel = "web"
		if g.rng.Float64() < 0.35 {
			e.Channel = "app"
		}
		step := min(int(c.sessionStep), len(pages)-1)
		e.Page = pages[step]
		if g.rng.Float64() < 0.6 {
			c.sessionStep++
		}
		if e.Page != "home" && e.Page != "search" {
			e.Category = Categories[c.sessionCat]
		}
		if e.Page == "product" {
			e.ProductID = fmt.Sprintf("p%02d%03d", c.sessionCat, g.rng.IntN(200))
		}
		e.SessionID = "s" + strconv.FormatUint(uint64(c.session), 10)
	case x < g.pEngage:
		e.Type = schemas.EventEngagement
		ch := g.rng.Float64()
		switch {
		case ch < 0.6:
			e.Channel = "email"
		case ch < 0.9:
			e.Channel = "push"
		default:
			e.Channel = "sms"
		}
		a := g.rng.Float64()
		switch {
		case a < 0.75:
			e.Action = "send"
		case a < 0.93:
			e.Action = "open"
		case a < 0.99:
			e.Action = "click"
		default:
			e.Action = "unsubscribe"
		}
		week := time.UnixMilli(g.clock).UTC().YearDay() / 7
		e.CampaignID = campaigns[(week+g.rng.IntN(2))%len(campaigns)]
	default:
		e.Type = schemas.EventPurchase
		e.Channel = "web"
		switch r := g.rng.Float64(); {
		case r < 0.3:
			e.Channel = "app"
		case r < 0.4:
			e.Channel = "store"
		}
		e.OrderID = "o" + e.EventID[len(g.idPrefix):]
		amount := math.Exp(4.0 + 0.8*g.rng.NormFloat64())
		e.Amount = math.Round(amount*100) / 100
		e.Currency = countries[c.country].currency
		items := 1 + g.rng.IntN(4)
		e.Quantity = int64(items)
		e.Categories = append(e.Categories, Categories[c.sessionCat])
		if items > 2 && g.rng.Float64() < 0.5 {
			if other := Categories[g.rng.IntN(len(Categories))]; other != e.Categories[0] {
				e.Categories = append(e.Categories, other)
			}
		}
		for i := 0; i < items; i++ {
			e.ProductIDs = append(e.ProductIDs, fmt.Sprintf("p%02d%03d", c.sessionCat, g.rng.IntN(200)))
		}
		c.sessionStep = 0
	}
}

// dueEntry is a session's next event: who and when. An entry whose
// customer's session ended or was rescheduled since is stale and skipped.
type dueEntry struct {
	at  int64
	idx int32
}

// dueHeap is a min-heap of session events by time.
type dueHeap []dueEntry

func (h *dueHeap) push(d dueEntry) {
	*h = append(*h, d)
	a := *h
	for j := len(a) - 1; j > 0; {
		parent := (j - 1) / 2
		if a[parent].at <= a[j].at {
			break
		}
		a[parent], a[j] = a[j], a[parent]
		j = parent
	}
}

func (h *dueHeap) pop() dueEntry {
	a := *h
	top := a[0]
	last := len(a) - 1
	a[0] = a[last]
	a = a[:last]
	for j := 0; ; {
		l, r, m := 2*j+1, 2*j+2, j
		if l < len(a) && a[l].at < a[m].at {
			m = l
		}
		if r < len(a) && a[r].at < a[m].at {
			m = r
		}
		if m == j {
			break
		}
		a[m], a[j] = a[j], a[m]
		j = m
	}
	*h = a
	return top
}
