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
// Event times never decrease. A customer's first event is preceded by a
// profile event.
func (g *Generator) Next(e *schemas.Event) bool {
	if g.hasPend {
		g.hasPend = false
		e.Reset()
		cats, pids, attrs := e.Categories, e.ProductIDs, e.Attributes
		*e = g.pending
		e.Categories = append(cats, g.pending.Categories...)
		e.ProductIDs = append(pids, g.pending.ProductIDs...)
		e.Attributes = attrs
		g.n++
		return true
	}
	step := int64(g.rng.ExpFloat64() * g.mean)
	if g.cfg.Duration > 0 && g.clock+step > g.cfg.Start+g.cfg.Duration {
		return false
	}
	g.clock += step
	idx := int(g.zipf.Uint64())
	c := &g.custs[idx]
	e.Reset()
	if !c.seen {
		c.seen = true
		g.profile(e, idx, true)
		// The activity that made the customer appear follows.
		g.activity(&g.pending, idx)
		g.hasPend = true
		g.n++
		return true
	}
	if g.rng.Float64() < 0.002 {
		g.profile(e, idx, false)
		g.n++
		return true
	}
	g.activity(e, idx)
	g.n++
	return true
}

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
