// Package envconf binds environment variables to the fields of a
// configuration struct by their YAML paths: a field at kafka.brokers is
// set by PREFIX_KAFKA_BROKERS. It knows strings, integers, booleans,
// time.Duration and string lists (comma-separated).
package envconf

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Name returns the variable that overrides the field at path, e.g.
// Name("SEGD", "kafka.brokers") is SEGD_KAFKA_BROKERS.
func Name(prefix, path string) string {
	return prefix + "_" + strings.ToUpper(strings.ReplaceAll(path, ".", "_"))
}

// Apply sets every field of *cfg (a pointer to a struct) whose variable
// is in environ ("KEY=VALUE" entries). It returns one problem per variable
// that does not parse, naming the variable, its value and the field.
func Apply(cfg any, prefix string, environ []string) []string {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, prefix+"_") {
			env[k] = v
		}
	}
	if len(env) == 0 {
		return nil
	}
	var problems []string
	Walk(reflect.ValueOf(cfg).Elem(), func(path string, v reflect.Value) {
		name := Name(prefix, path)
		s, ok := env[name]
		if !ok {
			return
		}
		if err := set(v, s); err != nil {
			problems = append(problems, fmt.Sprintf("%s (%q) for %s: %v", name, s, path, err))
		}
	})
	return problems
}

// Fields lists the YAML path of every leaf field of the struct v points
// to, in declaration order.
func Fields(cfg any) []string {
	var out []string
	Walk(reflect.ValueOf(cfg).Elem(), func(path string, _ reflect.Value) { out = append(out, path) })
	return out
}

// Walk calls fn for every leaf field of the struct v with its YAML path;
// fields without a yaml tag (or tagged "-") are skipped.
func Walk(v reflect.Value, fn func(path string, v reflect.Value)) {
	walk(v, "", fn)
}

func walk(v reflect.Value, prefix string, fn func(path string, v reflect.Value)) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		path := name
		if prefix != "" {
			path = prefix + "." + name
		}
		fv := v.Field(i)
		if fv.Kind() == reflect.Struct {
			walk(fv, path, fn)
			continue
		}
		fn(path, fv)
	}
}

var durationType = reflect.TypeOf(time.Duration(0))

func set(v reflect.Value, s string) error {
	if v.Type() == durationType {
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Int, reflect.Int64, reflect.Int32:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return err
		}
		v.SetInt(n)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		v.SetBool(b)
	case reflect.Slice:
		var parts []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		v.Set(reflect.ValueOf(parts))
	default:
		return fmt.Errorf("unsupported kind %s", v.Kind())
	}
	return nil
}
