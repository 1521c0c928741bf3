package retail

import (
	"strconv"
	"strings"
	"testing"

	"github.com/segd/segd/schemas"
)

func readAll(t *testing.T, path string) ([]schemas.Event, Stats) {
	t.Helper()
	r, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []schemas.Event
	for {
		var e schemas.Event
		ok, err := r.Next(&e)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		out = append(out, e)
	}
	return out, r.Stats()
}

func TestSmallFile(t *testing.T) {
	evs, st := readAll(t, "testdata/small.csv")
	var got []string
	for _, e := range evs {
		switch e.Type {
		case schemas.EventProfile:
			got = append(got, "profile "+e.CustomerID+" "+e.Attributes[0].Value.Str)
		default:
			got = append(got, "purchase "+e.CustomerID+" "+e.OrderID+" "+strings.Join(e.Categories, "+")+" "+strings.TrimRight(strings.TrimRight(fmtFloat(e.Amount), "0"), "."))
		}
	}
	want := []string{
		"profile 17850 United Kingdom",
		"purchase 17850 536365 home+other 30.6",
		"profile 14527 United Kingdom",
		"purchase 14527 C536379 other -27.5",
		"profile 17850 France",
		"purchase 17850 536380 other 34.8",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if st.Lines != 5 || st.GuestLines != 1 || st.Invoices != 3 || st.Cancellations != 1 || st.Customers != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func fmtFloat(f float64) string { return strconv.FormatFloat(f, 'f', 2, 64) }

// TestFullDataSet reads the real file and checks the counts its README
// documents.
func TestFullDataSet(t *testing.T) {
	path, err := Locate()
	if err != nil {
		t.Fatal(err)
	}
	evs, st := readAll(t, path)
	// One invoice's lines are split in two runs in the file: 22191 events.
	if st.Lines != 541909 || st.GuestLines != 135080 || st.Customers != 4372 || st.Invoices != 22190 || st.Purchases != 22191 {
		t.Fatalf("stats %+v; README: 541909 lines, 135080 without customer, 4372 customers, 22190 invoices", st)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Time < evs[i-1].Time {
			t.Fatalf("event %d goes back in time", i)
		}
	}
	if first, last := schemas.FormatTime(evs[0].Time), schemas.FormatTime(evs[len(evs)-1].Time); first != "2010-12-01T08:26:00Z" || last != "2011-12-09T12:50:00Z" {
		t.Fatalf("span %s .. %s", first, last)
	}
}
