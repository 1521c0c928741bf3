// Package retail reads the UCI Online Retail data set (CC BY 4.0;
// testdata/online-retail.csv.gz, shipped with the repository: 541,909 invoice lines of a UK online
// shop, 2010-12-01 to 2011-12-09) as segd events: one purchase per invoice
// with a customer, preceded by a profile event carrying the customer's
// country whenever it is first seen or changes.
package retail

import (
	"compress/gzip"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/segd/segd/schemas"
)

// Stats counts what the reader saw.
type Stats struct {
	Lines         int // data lines read
	GuestLines    int // lines without a customer id (they belong to no customer)
	Invoices      int // distinct invoices with a customer
	Purchases     int // purchase events: one per contiguous run of an invoice's lines
	Cancellations int // of which cancellations (invoice number starts with C)
	Customers     int // distinct customers
}

// Reader yields events from the CSV. Not safe for concurrent use.
type Reader struct {
	closer  io.Closer
	csv     *csv.Reader
	line    int
	pending []string // first line of the next invoice
	queue   []schemas.Event
	country map[string]string
	parts   map[string]int // invoice -> runs seen (one invoice in the file is split)
	stats   Stats
}

// Open opens a .csv or .csv.gz file.
func Open(path string) (*Reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("retail: %w", err)
	}
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("retail: %s: %w", path, err)
		}
		r = gz
	}
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = 8
	cr.ReuseRecord = false
	header, err := cr.Read()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("retail: %s: header: %w", path, err)
	}
	if strings.Join(header, ",") != "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country" {
		f.Close()
		return nil, fmt.Errorf("retail: %s: unexpected header %q", path, strings.Join(header, ","))
	}
	return &Reader{closer: f, csv: cr, line: 1, country: map[string]string{}, parts: map[string]int{}}, nil
}

// Close closes the file.
func (r *Reader) Close() error { return r.closer.Close() }

// Stats returns the counts so far.
func (r *Reader) Stats() Stats {
	s := r.stats
	s.Customers = len(r.country)
	return s
}

// Categories maps description keywords to a product category; the first
// match wins, anything else is "other".
var Categories = []struct{ Keyword, Category string }{
	{"CHRISTMAS", "seasonal"}, {"EASTER", "seasonal"},
	{"BAG", "bags"}, {"CANDLE", "home"}, {"LIGHT", "home"}, {"LANTERN", "home"}, {"CUSHION", "home"}, {"FRAME", "home"}, {"CLOCK", "home"},
	{"MUG", "kitchen"}, {"CUP", "kitchen"}, {"TEA", "kitchen"}, {"CAKE", "kitchen"}, {"JAR", "kitchen"}, {"BOWL", "kitchen"},
	{"CARD", "stationery"}, {"PAPER", "stationery"}, {"NOTEBOOK", "stationery"}, {"WRAP", "stationery"},
	{"TOY", "toys"}, {"DOLL", "toys"}, {"GAME", "toys"},
	{"NECKLACE", "jewellery"}, {"BRACELET", "jewellery"}, {"EARRINGS", "jewellery"},
}

func category(desc string) string {
	for _, c := range Categories {
		if strings.Contains(desc, c.Keyword) {
			return c.Category
		}
	}
	return "other"
}

// Next fills e with the next event; it returns false at the end.
func (r *Reader) Next(e *schemas.Event) (bool, error) {
	for len(r.queue) == 0 {
		ok, err := r.readInvoice()
		if err != nil || !ok {
			return false, err
		}
	}
	*e = r.queue[0]
	r.queue = r.queue[1:]
	return true, nil
}

func (r *Reader) readLine() ([]string, error) {
	if r.pending != nil {
		rec := r.pending
		r.pending = nil
		return rec, nil
	}
	rec, err := r.csv.Read()
	if err != nil {
		return nil, err
	}
	r.line++
	r.stats.Lines++
	return rec, nil
}

// readInvoice reads the contiguous lines of one invoice and queues its
// events.
func (r *Reader) readInvoice() (bool, error) {
	first, err := r.readLine()
	if errors.Is(err, io.EOF) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("retail: line %d: %w", r.line, err)
	}
	lines := [][]string{first}
	for {
		rec, err := r.readLine()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return false, fmt.Errorf("retail: line %d: %w", r.line, err)
		}
		if rec[0] != first[0] {
			r.pending = rec
			break
		}
		lines = append(lines, rec)
	}
	var cust string
	if v := first[6]; v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return false, fmt.Errorf("retail: line %d: CustomerID %q: %w", r.line, v, err)
		}
		cust = strconv.FormatInt(int64(f), 10)
	}
	if cust == "" {
		r.stats.GuestLines += len(lines)
		return true, nil
	}
	when, err := time.Parse("2006-01-02 15:04:05", first[4])
	if err != nil {
		return false, fmt.Errorf("retail: line %d: InvoiceDate %q: %w", r.line, first[4], err)
	}
	ts := when.UTC().UnixMilli()
	if country := first[7]; r.country[cust] != country {
		r.country[cust] = country
		r.queue = append(r.queue, schemas.Event{Type: schemas.EventProfile, EventID: "retail-profile-" + first[0], CustomerID: cust, Time: ts,
			Attributes: []schemas.Attribute{{Name: "country", Value: schemas.String(country)}}})
	}
	var amount float64
	var qty int64
	cats, prods := map[string]bool{}, map[string]bool{}
	for _, l := range lines {
		q, err := strconv.ParseInt(l[3], 10, 64)
		if err != nil {
			return false, fmt.Errorf("retail: invoice %s: Quantity %q: %w", first[0], l[3], err)
		}
		price, err := strconv.ParseFloat(l[5], 64)
		if err != nil {
			return false, fmt.Errorf("retail: invoice %s: UnitPrice %q: %w", first[0], l[5], err)
		}
		amount += float64(q) * price
		qty += q
		cats[category(l[2])] = true
		prods[l[1]] = true
	}
	// An invoice whose lines are not contiguous becomes one event per run,
	// each with its own id so that de-duplication keeps them all.
	r.parts[first[0]]++
	id := "retail-" + first[0]
	if n := r.parts[first[0]]; n > 1 {
		id += "-part" + strconv.Itoa(n)
	} else {
		r.stats.Invoices++
		if strings.HasPrefix(first[0], "C") {
			r.stats.Cancellations++
		}
	}
	r.stats.Purchases++
	e := schemas.Event{Type: schemas.EventPurchase, EventID: id, CustomerID: cust, Time: ts, Channel: "web",
		OrderID: first[0], Amount: math.Round(amount*100) / 100, Currency: "GBP", Quantity: qty, Categories: sortedKeys(cats), ProductIDs: sortedKeys(prods)}
	r.queue = append(r.queue, e)
	return true, nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Locate finds the data set: $SEGD_RETAIL_DATA, else the copy shipped in
// this package's testdata/ (found from the source file's location, so tests
// of any package and any working directory read the repository's own copy).
func Locate() (string, error) {
	if p := os.Getenv("SEGD_RETAIL_DATA"); p != "" {
		return p, nil
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("retail: cannot tell where the package source is (set SEGD_RETAIL_DATA)")
	}
	p := filepath.Join(filepath.Dir(file), "testdata", "online-retail.csv.gz")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("retail: data set not found (set SEGD_RETAIL_DATA): %w", err)
	}
	return p, nil
}
