package envconf

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

type inner struct {
	Brokers []string      `yaml:"brokers"`
	Wait    time.Duration `yaml:"max_wait"`
}

type config struct {
	Kafka   inner  `yaml:"kafka"`
	Name    string `yaml:"name"`
	Count   int    `yaml:"count"`
	On      bool   `yaml:"on"`
	Skipped string
	Hidden  string `yaml:"-"`
}

func TestApply(t *testing.T) {
	for _, tc := range []struct {
		name     string
		environ  []string
		want     config
		problems []string
	}{
		{name: "nothing set", environ: []string{"HOME=/root", "OTHER_NAME=x"}},
		{name: "every kind", environ: []string{"T_KAFKA_BROKERS=a:1, b:2,,", "T_KAFKA_MAX_WAIT=250ms", "T_NAME=n", "T_COUNT=-3", "T_ON=true", "T_SKIPPED=x", "T_HIDDEN=y"},
			want: config{Kafka: inner{Brokers: []string{"a:1", "b:2"}, Wait: 250 * time.Millisecond}, Name: "n", Count: -3, On: true}},
		{name: "bad values named", environ: []string{"T_COUNT=many", "T_KAFKA_MAX_WAIT=soon", "T_ON=yes please"},
			problems: []string{`T_KAFKA_MAX_WAIT ("soon") for kafka.max_wait`, `T_COUNT ("many") for count`, `T_ON ("yes please") for on`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got config
			problems := Apply(&got, "T", tc.environ)
			if len(problems) != len(tc.problems) {
				t.Fatalf("problems %q, want %d", problems, len(tc.problems))
			}
			for i, p := range tc.problems {
				if !strings.HasPrefix(problems[i], p) {
					t.Errorf("problem %d: %q, want it to start with %q", i, problems[i], p)
				}
			}
			if len(tc.problems) == 0 && !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestFieldsAndName(t *testing.T) {
	got := strings.Join(Fields(&config{}), " ")
	if want := "kafka.brokers kafka.max_wait name count on"; got != want {
		t.Fatalf("Fields: %q, want %q", got, want)
	}
	if n := Name("SEGD", "kafka.max_wait"); n != "SEGD_KAFKA_MAX_WAIT" {
		t.Fatalf("Name: %s", n)
	}
}
