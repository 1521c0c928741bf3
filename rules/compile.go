package rules

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"slices"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/segd/segd/schemas"
)

// RuleSet is a compiled rules file. It is immutable and safe for
// concurrent use; per-customer mutable data lives in State.
type RuleSet struct {
	version int64
	hash    string
	// segIDs are the segment ids in order; segListID identifies them.
	segIDs    []string
	segListID uint64
	file      string
	traits    []*Trait
	segments  []*Segment
	segIndex  map[string]int
	byType    [schemas.NumEventTypes][]*Trait // traits each event type updates
	segsFor   [schemas.NumEventTypes][]int
	// segMasks[t][k] is the readMask of segment segsFor[t][k]: a flat
	// array that SegmentsTouched scans without loading each Segment.
	segMasks [schemas.NumEventTypes][]Touched
	keyIndex map[uint32]int // trait key -> index, for decoding stored state
	warnings Errors
	// timing is the union of what the time-dependent segments depend
	// on, for NextChangeAll.
	timing timeDeps
	// timeSegs are the time-dependent segments, ascending, with the
	// windowed traits each reads (SegmentsDue).
	timeSegs []timeSeg
	// progs holds each segment's condition in a flat form, indexed like
	// segments, so that the common shapes run without a closure call.
	progs []segProgram
	// shared maps a segment to the index of its condition among those
	// that two or more segments have (equal When), or to -1; nil when no
	// condition is shared. EvalSegments evaluates a shared condition once
	// per call (nShared of them).
	shared  []int32
	nShared int
	// cuts[i], when not nil, are the comparisons with constants through
	// which the segments read windowed count or sum trait i, all of
	// them: its leaving buckets matter only when they flip one
	// (flipTime). nil: every leaving bucket may change a result.
	cuts [][]traitCmp
}

// Trait is a compiled trait definition.
type Trait struct {
	Name   string
	Index  int
	Pos    Pos
	Agg    string
	Event  schemas.EventType
	Field  string // "" for count(event)
	Window int64  // ms; 0 = lifetime
	Bucket int64  // ms; bucket granularity of a windowed trait
	// Def is the canonical definition; traits with equal Def share state
	// across rule reloads.
	Def string

	agg    aggKind
	kind   valueKind // result type
	key    uint32
	fld    field
	filter func(*env) bool
	// fieldStr/fieldNum/fieldList read the aggregated field.
}

// Segment is a compiled segment.
type Segment struct {
	ID              string
	Index           int
	Pos             Pos
	Description     string
	Owner           string
	Tags            []string
	RequiresConsent bool
	// Topic, if set, routes this segment's changes to its own topic.
	Topic string
	// When is the canonical form of the segment's condition.
	When string
	// Reads are the indexes of the traits the condition reads.
	Reads []int
	// ReadsProfile are the profile attributes the condition reads.
	ReadsProfile []string
	// TimeDependent: the result can change with no event (a window or
	// since()).
	TimeDependent bool

	eval     func(*env) bool
	prog     segProgram
	readMask Touched // traits read, as in Apply's result
	sinces   []sinceDep
	wins     []int // windowed traits read
	timing   timeDeps
	// cmps are the comparisons of a trait with a constant the condition
	// makes; opaque are the traits it also reads some other way
	// (arithmetic, is null, in, a comparison with another trait).
	cmps   []traitCmp
	opaque []int
}

// sinceDep is a comparison since(x) OP d, whose result flips at a time
// computable from x.
type sinceDep struct {
	x    func(*env) (float64, bool)
	key  string  // canonical text of x, equal for equal x
	deps Touched // the traits x depends on, when that is all (cexpr.sinceDeps)
	op   string
	d    int64
}

// Version returns the rules file's version field.
func (rs *RuleSet) Version() int64 { return rs.version }

// Hash returns the hex SHA-256 of the rule set's canonical form: equal for
// files that differ only in formatting, comments or order.
func (rs *RuleSet) Hash() string { return rs.hash }

// SegmentListID identifies the ordered list of the rule set's segment
// ids (the first 8 bytes of a SHA-256 of it): equal for rule sets whose
// segments have the same ids in the same order, whatever their
// conditions, so that an index into Segments means the same segment.
func (rs *RuleSet) SegmentListID() uint64 { return rs.segListID }

// SegmentIDs returns the segment ids in file order (the list
// SegmentListID identifies). The slice must not be modified.
func (rs *RuleSet) SegmentIDs() []string { return rs.segIDs }

// File returns the file name the rule set was compiled from.
func (rs *RuleSet) File() string { return rs.file }

// Warnings returns lint findings.
func (rs *RuleSet) Warnings() []*Error { return rs.warnings }

// Traits returns the traits in file order; Trait.Index is the position.
func (rs *RuleSet) Traits() []*Trait { return rs.traits }

// Segments returns the segments in file order; Segment.Index is the
// position.
func (rs *RuleSet) Segments() []*Segment { return rs.segments }

// SegmentIndex returns the index of a segment id.
func (rs *RuleSet) SegmentIndex(id string) (int, bool) {
	i, ok := rs.segIndex[id]
	return i, ok
}

// SegmentsFor returns the segments an event of type t can affect, in index
// order. The slice must not be modified.
func (rs *RuleSet) SegmentsFor(t schemas.EventType) []int {
	if int(t) >= len(rs.segsFor) {
		return nil
	}
	return rs.segsFor[t]
}

// CompileFile reads and compiles a rules file. A file over MaxRulesBytes
// is refused without reading it whole.
func CompileFile(path string) (*RuleSet, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	defer f.Close()
	src, err := io.ReadAll(io.LimitReader(f, MaxRulesBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	if len(src) > MaxRulesBytes {
		size := int64(len(src))
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			size = fi.Size()
		}
		return nil, Errors{tooLarge(path, size)}
	}
	return Compile(path, src)
}

// Compile parses, type-checks and compiles a rules file. filename is used
// in error positions. The error, if any, is Errors; errors.Is(err,
// ErrLimit) tells a file over one of the limits (MaxRulesBytes, ...).
// Compile's work is about linear in len(src).
func Compile(filename string, src []byte) (*RuleSet, error) {
	if len(src) > MaxRulesBytes {
		return nil, Errors{tooLarge(filename, int64(len(src)))}
	}
	c := &compiler{file: filename, rs: &RuleSet{file: filename, segIndex: map[string]int{}, keyIndex: map[uint32]int{}}}
	c.compile(src)
	if len(c.errs) > 0 {
		errs := c.errs.sorted()
		if c.stoppedAt != nil {
			errs = append(errs, &Error{Pos: *c.stoppedAt, Msg: fmt.Sprintf("too many errors, stopped after %d (MaxErrors): fix these and compile again", MaxErrors)})
		}
		return nil, errs
	}
	c.rs.warnings = c.warns.sorted()
	return c.rs, nil
}

type compiler struct {
	lines []string // source lines, to place errors inside block scalars
	// failed names traits that did not compile, so that segments reading
	// them do not repeat the error as "unknown trait".
	failed map[string]bool
	// traitByName holds the compiled traits.
	traitByName map[string]*Trait
	// traitNames lists the trait names for hints; built on first use.
	traitNames []string
	// hintCells is what is left of hintBudget.
	hintCells int
	// reads collects what the expression being compiled reads.
	reads     *exprReads
	file      string
	rs        *RuleSet
	errs      Errors
	warns     Errors
	stoppedAt *Pos // where compilation stopped, after MaxErrors errors
}

func (c *compiler) errAt(pos Pos, format string, args ...any) {
	c.addErr(&Error{Pos: pos, Msg: fmt.Sprintf(format, args...)})
}

// addErr records e; past MaxErrors errors, it stops the compilation
// instead (c.stopped), which every loop checks.
func (c *compiler) addErr(e *Error) {
	if c.stopped() {
		return
	}
	if len(c.errs) >= MaxErrors {
		c.stoppedAt = &e.Pos
		return
	}
	c.errs = append(c.errs, e)
}

func (c *compiler) stopped() bool { return c.stoppedAt != nil }

// traitHint returns a "did you mean" hint for an unknown trait name,
// within what is left of hintBudget.
func (c *compiler) traitHint(name string) string {
	if c.traitNames == nil {
		c.traitNames = make([]string, len(c.rs.traits))
		for i, t := range c.rs.traits {
			c.traitNames[i] = t.Name
		}
	}
	hint, cells := didYouMeanWithin(name, c.traitNames, c.hintCells)
	c.hintCells -= cells
	return hint
}

func (c *compiler) warnAt(pos Pos, format string, args ...any) {
	c.warns = append(c.warns, &Error{Pos: pos, Msg: fmt.Sprintf(format, args...), Warning: true})
}

func (c *compiler) pos(n *yaml.Node) Pos { return Pos{File: c.file, Line: n.Line, Col: n.Column} }

// exprPos maps a byte offset inside a scalar's value to a file position.
func (c *compiler) exprPos(n *yaml.Node, off int) Pos {
	p := c.pos(n)
	v := n.Value
	if off > len(v) {
		off = len(v)
	}
	switch n.Style {
	case yaml.LiteralStyle, yaml.FoldedStyle:
		line := strings.Count(v[:off], "\n")
		lineStart := strings.LastIndexByte(v[:off], '\n') + 1
		// The node does not record the block's indentation: read it from
		// the source line.
		fileLine := p.Line + 1 + line
		indent := 0
		if fileLine-1 < len(c.lines) {
			l := c.lines[fileLine-1]
			indent = len(l) - len(strings.TrimLeft(l, " "))
		}
		return Pos{File: c.file, Line: fileLine, Col: indent + 1 + off - lineStart}
	case yaml.DoubleQuotedStyle, yaml.SingleQuotedStyle:
		p.Col++
	}
	if nl := strings.Count(v[:off], "\n"); nl > 0 {
		p.Line += nl
		p.Col = off - strings.LastIndexByte(v[:off], '\n')
		return p
	}
	p.Col += off
	return p
}

func (c *compiler) compile(src []byte) {
	c.lines = strings.Split(string(src), "\n")
	c.failed = map[string]bool{}
	c.traitByName = map[string]*Trait{}
	c.hintCells = hintBudget
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		c.errs = append(c.errs, yamlError(c.file, err))
		return
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		c.errAt(Pos{File: c.file, Line: 1, Col: 1}, "empty rules file: expected version, traits and segments")
		return
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		c.errAt(c.pos(root), "expected a mapping with version, traits and segments")
		return
	}
	var traitsNode, segsNode *yaml.Node
	haveVersion := false
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		switch k.Value {
		case "version":
			if err := v.Decode(&c.rs.version); err != nil || c.rs.version < 1 {
				c.errAt(c.pos(v), "version must be a positive integer, found %q", v.Value)
			}
			haveVersion = true
		case "traits":
			traitsNode = v
		case "segments":
			segsNode = v
		default:
			c.errAt(c.pos(k), "unknown top-level key %q: expected version, traits or segments%s", k.Value, didYouMean(k.Value, []string{"version", "traits", "segments"}))
		}
	}
	if !haveVersion {
		c.errAt(c.pos(root), "missing version: add `version: 1` and bump it when the rules change")
	}
	if c.overLimit(traitsNode, MaxTraits, "traits", "MaxTraits", "remove unused traits: every trait keeps state for every customer") ||
		c.overLimit(segsNode, MaxSegments, "segments", "MaxSegments", "remove unused segments") {
		return
	}
	if traitsNode != nil {
		c.compileTraits(traitsNode)
	}
	if segsNode == nil {
		c.errAt(c.pos(root), "missing segments: a rules file defines at least one segment")
	} else {
		c.compileSegments(segsNode)
	}
	if len(c.errs) == 0 {
		c.finish()
	}
}

// overLimit reports, at its first entry past the limit, a mapping n with
// more than limit entries.
func (c *compiler) overLimit(n *yaml.Node, limit int, what, name, todo string) bool {
	if n == nil || n.Kind != yaml.MappingNode || len(n.Content)/2 <= limit {
		return false
	}
	c.addErr(limitError(c.pos(n.Content[2*limit]), "%d %s, over the limit of %d (%s): %s", len(n.Content)/2, what, limit, name, todo))
	return true
}

func yamlError(file string, err error) *Error {
	// yaml.v3 reports "yaml: line N: msg".
	msg := err.Error()
	line := 1
	if _, after, ok := strings.Cut(msg, "line "); ok {
		fmt.Sscanf(after, "%d", &line)
		if _, m, ok := strings.Cut(after, ": "); ok {
			msg = m
		}
	}
	return &Error{Pos: Pos{File: file, Line: line, Col: 1}, Msg: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}

func isName(s string) bool {
	if s == "" || !isLetter(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if !isLetter(s[i]) && !isDigit(s[i]) {
			return false
		}
	}
	return true
}

func (c *compiler) compileTraits(n *yaml.Node) {
	if n.Kind != yaml.MappingNode {
		c.errAt(c.pos(n), "traits must be a mapping of name: definition")
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content) && !c.stopped(); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		name := k.Value
		switch {
		case !isName(name):
			c.errAt(c.pos(k), "trait name %q must be a letter followed by letters, digits or _", name)
			continue
		case reserved[name] || name == "profile" || name == "true" || name == "false" || name == "null":
			c.errAt(c.pos(k), "trait name %q is a reserved word", name)
			continue
		case seen[name]:
			c.errAt(c.pos(k), "trait %q is defined twice", name)
			continue
		}
		seen[name] = true
		exprNode := v
		if v.Kind == yaml.MappingNode {
			exprNode = nil
			for j := 0; j+1 < len(v.Content); j += 2 {
				switch v.Content[j].Value {
				case "expr":
					exprNode = v.Content[j+1]
				case "description":
				default:
					c.errAt(c.pos(v.Content[j]), "unknown trait key %q: expected expr or description", v.Content[j].Value)
				}
			}
			if exprNode == nil {
				c.errAt(c.pos(v), "trait %q has no expr", name)
				continue
			}
		}
		if exprNode.Kind != yaml.ScalarNode || exprNode.Value == "" {
			c.errAt(c.pos(exprNode), "trait %q: expected a definition such as count(purchase) over 30d", name)
			c.failed[name] = true
			continue
		}
		if t := c.compileTrait(name, exprNode); t != nil {
			t.Index = len(c.rs.traits)
			c.rs.traits = append(c.rs.traits, t)
			c.traitByName[name] = t
		} else {
			c.failed[name] = true
		}
	}
}

func (c *compiler) compileTrait(name string, n *yaml.Node) *Trait {
	p := newParser(n.Value)
	d := p.parseTrait()
	if len(p.errs) > 0 {
		for _, e := range p.errs {
			c.addErr(&Error{Pos: c.exprPos(n, e.off), Msg: "trait " + name + ": " + e.msg, Err: e.err})
		}
		return nil
	}
	t := &Trait{Name: name, Pos: c.pos(n), Agg: d.agg}
	agg, ok := aggNames[d.agg]
	if !ok {
		c.errAt(c.exprPos(n, d.aggOff), "trait %s: unknown aggregate %q: expected one of %s%s", name, d.agg, strings.Join(aggList(), ", "), didYouMean(d.agg, aggList()))
		return nil
	}
	t.agg = agg
	et, ok := schemas.ParseEventType(d.event)
	if !ok || et == schemas.EventProfile {
		c.errAt(c.exprPos(n, d.eventOff), "trait %s: unknown event type %q: expected purchase, browse or engagement%s", name, d.event, didYouMean(d.event, []string{"purchase", "browse", "engagement"}))
		return nil
	}
	t.Event = et
	if d.field != "" {
		f, ok := lookupField(et, d.field)
		if !ok {
			c.errAt(c.exprPos(n, d.fieldOff), "trait %s: %s has no field %q%s", name, d.event, d.field, didYouMean(d.field, fieldNames(et)))
			return nil
		}
		t.Field, t.fld = d.field, f
	}
	if !c.traitKind(t, d, n) {
		return nil
	}
	if d.filter != nil {
		ce := c.compileTop(n, d.filter, scope{event: et, trait: name})
		if ce != nil {
			if ce.kind != kBool && ce.kind != kAny {
				c.errAt(c.exprPos(n, d.filter.offset()), "trait %s: where needs a condition (true or false), found a %s", name, ce.kind)
			} else {
				t.filter = ce.asBool()
			}
		}
	}
	if !c.traitWindow(t, d, n) {
		return nil
	}
	t.Def, t.key = canonicalDef(t, d)
	return t
}

// traitKind checks that the aggregate fits the field and sets the trait's
// result type.
func (c *compiler) traitKind(t *Trait, d *traitDef, n *yaml.Node) bool {
	name, agg := t.Name, t.agg
	switch agg {
	case aggCount:
		t.kind = kNum
	case aggSum, aggAvg:
		if t.Field == "" || t.fld.kind != kNum {
			c.errAt(c.exprPos(n, d.eventOff), "trait %s: %s needs a number field, e.g. %s(purchase.amount)", name, d.agg, d.agg)
			return false
		}
		t.kind = kNum
	case aggMin, aggMax:
		if t.Field == "" || (t.fld.kind != kNum && t.fld.kind != kTime) {
			c.errAt(c.exprPos(n, d.eventOff), "trait %s: %s needs a number or time field, e.g. %s(purchase.amount)", name, d.agg, d.agg)
			return false
		}
		t.kind = t.fld.kind
	case aggDistinct:
		if t.Field == "" || t.fld.kind == kTime {
			c.errAt(c.exprPos(n, d.eventOff), "trait %s: distinct_count needs a string, number or list field, e.g. distinct_count(browse.category)", name)
			return false
		}
		t.kind = kNum
	case aggMostFrequent:
		if t.Field == "" || (t.fld.kind != kStr && t.fld.kind != kList) {
			c.errAt(c.exprPos(n, d.eventOff), "trait %s: most_frequent needs a string or list field, e.g. most_frequent(browse.category)", name)
			return false
		}
		t.kind = kStr
	case aggFirst, aggLast:
		if t.Field == "" {
			c.errAt(c.exprPos(n, d.eventOff), "trait %s: %s needs a field, e.g. %s(purchase.ts) or %s(purchase.amount)", name, d.agg, d.agg, d.agg)
			return false
		}
		if t.fld.kind == kList {
			c.errAt(c.exprPos(n, d.fieldOff), "trait %s: %s of a list field is not supported; use most_frequent or distinct_count", name, d.agg)
			return false
		}
		if d.window != 0 {
			c.errAt(c.exprPos(n, d.windowOff), "trait %s: %s is a lifetime aggregate and takes no window; for the latest time in a window use max(%s.ts) over ...", name, d.agg, d.event)
			return false
		}
		t.kind = t.fld.kind
	}
	return true
}

// traitWindow checks and sets the window and its bucket (default: an hour,
// a day for windows over two days, never more than the window).
func (c *compiler) traitWindow(t *Trait, d *traitDef, n *yaml.Node) bool {
	name := t.Name
	if d.window < 0 || (d.window > 0 && d.window < 1000) {
		c.errAt(c.exprPos(n, d.windowOff), "trait %s: window %s must be at least 1s", name, formatDuration(d.window))
		return false
	}
	if d.window > 0 {
		t.Window = d.window
		t.Bucket = d.bucket
		if t.Bucket == 0 {
			t.Bucket = durationUnits["h"]
			if t.Window > 2*durationUnits["d"] {
				t.Bucket = durationUnits["d"]
			}
			if t.Window < t.Bucket {
				t.Bucket = t.Window
			}
		}
		if t.Bucket <= 0 || t.Window%t.Bucket != 0 {
			off := d.windowOff
			if d.bucket != 0 {
				off = d.bucketOff
			}
			c.errAt(c.exprPos(n, off), "trait %s: window %s is not a multiple of its bucket %s; pick a bucket that divides it", name, formatDuration(t.Window), formatDuration(t.Bucket))
			return false
		}
		if t.Window/t.Bucket > 10000 {
			c.errAt(c.exprPos(n, d.windowOff), "trait %s: window %s in buckets of %s keeps %d buckets per customer (limit 10000); use a coarser bucket", name, formatDuration(t.Window), formatDuration(t.Bucket), t.Window/t.Bucket)
			return false
		}
	} else if d.bucket != 0 {
		c.errAt(c.exprPos(n, d.bucketOff), "trait %s: bucket needs a window (over ...)", name)
		return false
	}
	return true
}

// canonicalDef is the trait's canonical definition (traits with equal
// definitions share state across rule changes) and its key, a hash of it.
func canonicalDef(t *Trait, d *traitDef) (string, uint32) {
	var def strings.Builder
	fmt.Fprintf(&def, "%s(%s", d.agg, d.event)
	if t.Field != "" {
		def.WriteString("." + t.Field)
	}
	if d.filter != nil {
		def.WriteString(" where " + d.filter.String())
	}
	def.WriteString(")")
	if t.Window > 0 {
		fmt.Fprintf(&def, " over %s bucket %s", formatDuration(t.Window), formatDuration(t.Bucket))
	}
	h := fnv.New32a()
	h.Write([]byte(def.String()))
	return def.String(), h.Sum32()
}

func (c *compiler) compileSegments(n *yaml.Node) {
	if n.Kind != yaml.MappingNode {
		c.errAt(c.pos(n), "segments must be a mapping of id: {when: ...}")
		return
	}
	for i := 0; i+1 < len(n.Content) && !c.stopped(); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		id := k.Value
		if !isSegmentID(id) {
			c.errAt(c.pos(k), "segment id %q must be letters, digits, _ or - (starting with a letter)", id)
			continue
		}
		if _, dup := c.rs.segIndex[id]; dup {
			c.errAt(c.pos(k), "segment %q is defined twice", id)
			continue
		}
		s := &Segment{ID: id, Pos: c.pos(k)}
		var when *yaml.Node
		switch v.Kind {
		case yaml.ScalarNode:
			when = v
		case yaml.MappingNode:
			for j := 0; j+1 < len(v.Content); j += 2 {
				key, val := v.Content[j], v.Content[j+1]
				var err error
				switch key.Value {
				case "when":
					when = val
				case "description":
					err = val.Decode(&s.Description)
				case "owner":
					err = val.Decode(&s.Owner)
				case "tags":
					err = val.Decode(&s.Tags)
				case "requires_consent":
					err = val.Decode(&s.RequiresConsent)
				case "topic":
					err = val.Decode(&s.Topic)
				default:
					keys := []string{"when", "description", "owner", "tags", "requires_consent", "topic"}
					c.errAt(c.pos(key), "segment %s: unknown key %q: expected %s%s", id, key.Value, strings.Join(keys, ", "), didYouMean(key.Value, keys))
				}
				if err != nil {
					c.errAt(c.pos(val), "segment %s: %s: %v", id, key.Value, strings.TrimPrefix(err.Error(), "yaml: "))
				}
			}
		default:
			c.errAt(c.pos(v), "segment %s: expected {when: \"...\"} or a condition string", id)
			continue
		}
		if when == nil || when.Kind != yaml.ScalarNode || strings.TrimSpace(when.Value) == "" {
			c.errAt(c.pos(v), "segment %s: missing when: the condition that puts a customer in the segment", id)
			continue
		}
		if c.compileSegment(s, when) {
			s.Index = len(c.rs.segments)
			c.rs.segIndex[id] = s.Index
			c.rs.segments = append(c.rs.segments, s)
		}
	}
}

// sharedConditions numbers the conditions (canonical When) that two or
// more segments have, and returns for each segment its condition's number
// or -1, and how many there are; nil, 0 when no condition is shared. Equal
// canonical conditions give equal results for one state and clock.
func sharedConditions(segs []*Segment) ([]int32, int) {
	count := map[string]int{}
	for _, s := range segs {
		count[s.When]++
	}
	var shared []int32
	num := map[string]int32{}
	for i, s := range segs {
		if count[s.When] < 2 {
			continue
		}
		if shared == nil {
			shared = make([]int32, len(segs))
			for j := range shared {
				shared[j] = -1
			}
		}
		k, ok := num[s.When]
		if !ok {
			k = int32(len(num))
			num[s.When] = k
		}
		shared[i] = k
	}
	return shared, len(num)
}

func isSegmentID(s string) bool {
	if s == "" || !isLetter(s[0]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isLetter(s[i]) && !isDigit(s[i]) && s[i] != '-' {
			return false
		}
	}
	return true
}

// protectedAttributes draw a fairness warning when a segment reads them.
var protectedAttributes = map[string]bool{"age": true, "birth_year": true, "birthdate": true, "date_of_birth": true, "gender": true, "sex": true, "ethnicity": true, "race": true, "religion": true, "disability": true, "marital_status": true, "sexual_orientation": true, "nationality": true}

func (c *compiler) compileSegment(s *Segment, when *yaml.Node) bool {
	p := newParser(when.Value)
	ast := p.parseExpr()
	if len(p.errs) > 0 {
		for _, e := range p.errs {
			c.addErr(&Error{Pos: c.exprPos(when, e.off), Msg: "segment " + s.ID + ": " + e.msg, Err: e.err})
		}
		return false
	}
	sc := scope{segment: s.ID}
	ce := c.compileTop(when, ast, sc)
	if ce == nil {
		return false
	}
	if ce.kind != kBool && ce.kind != kAny {
		c.errAt(c.exprPos(when, 0), "segment %s: when must be a condition (true or false), found a %s", s.ID, ce.kind)
		return false
	}
	s.eval = ce.asBool()
	s.prog = segProgram{op: progClosure, f: s.eval}
	switch {
	case ce.tcmp != nil:
		s.prog = segProgram{op: progCmp, a: *ce.tcmp}
	case ce.pair != nil && ce.pair.and:
		s.prog = segProgram{op: progAnd, a: ce.pair.a, b: ce.pair.b}
	case ce.pair != nil:
		s.prog = segProgram{op: progOr, a: ce.pair.a, b: ce.pair.b}
	}
	s.When = ast.String()
	s.sinces = c.reads.sinces
	reads := map[int]bool{}
	for _, ti := range c.reads.traits {
		reads[ti] = true
	}
	for ti := range reads {
		s.readMask |= traitBit(ti)
		s.Reads = append(s.Reads, ti)
		if c.rs.traits[ti].Window > 0 {
			s.wins = append(s.wins, ti)
		}
	}
	sort.Ints(s.Reads)
	sort.Ints(s.wins)
	s.cmps = c.reads.cmps
	left := map[int]int{}
	for _, ti := range c.reads.traits {
		left[ti]++
	}
	for _, tc := range s.cmps {
		left[tc.idx]--
	}
	for _, ti := range s.Reads {
		if left[ti] > 0 {
			s.opaque = append(s.opaque, ti)
		}
	}
	attrs := map[string]bool{}
	for _, a := range c.reads.attrs {
		attrs[a] = true
	}
	for a := range attrs {
		s.ReadsProfile = append(s.ReadsProfile, a)
	}
	sort.Strings(s.ReadsProfile)
	for _, a := range s.ReadsProfile {
		if protectedAttributes[a] {
			c.warnAt(c.exprPos(when, 0), "segment %s reads profile.%s, a protected attribute: check the segment for unfair treatment before acting on it", s.ID, a)
		}
	}
	s.TimeDependent = len(s.wins) > 0 || len(s.sinces) > 0
	s.timing = newTimeDeps(s.wins, s.sinces)
	if len(s.Reads) == 0 && len(s.ReadsProfile) == 0 {
		c.warnAt(c.exprPos(when, 0), "segment %s reads no trait and no profile attribute: its result never changes", s.ID)
	}
	return true
}

// finish builds the dependency maps and the hash.
func (c *compiler) finish() {
	rs := c.rs
	for _, t := range rs.traits {
		rs.byType[t.Event] = append(rs.byType[t.Event], t)
		if other, dup := rs.keyIndex[t.key]; dup && rs.traits[other].Def != t.Def {
			c.errAt(t.Pos, "trait %s: internal key collides with trait %s; rename nothing, but change the definition slightly (e.g. bucket)", t.Name, rs.traits[other].Name)
		}
		rs.keyIndex[t.key] = t.Index
	}
	for _, s := range rs.segments {
		rs.progs = append(rs.progs, s.prog)
		types := map[schemas.EventType]bool{}
		for _, ti := range s.Reads {
			types[rs.traits[ti].Event] = true
		}
		if len(s.ReadsProfile) > 0 {
			types[schemas.EventProfile] = true
		}
		for t := range types {
			rs.segsFor[t] = append(rs.segsFor[t], s.Index)
		}
	}
	rs.shared, rs.nShared = sharedConditions(rs.segments)
	for t := range rs.segsFor {
		sort.Ints(rs.segsFor[t])
		for _, i := range rs.segsFor[t] {
			rs.segMasks[t] = append(rs.segMasks[t], rs.segments[i].readMask)
		}
	}
	seenTrait := map[int]bool{}
	var wins []int
	var sinces []sinceDep
	for _, s := range rs.segments {
		for _, ti := range s.wins {
			if !seenTrait[ti] {
				seenTrait[ti] = true
				wins = append(wins, ti)
			}
		}
		sinces = append(sinces, s.sinces...)
	}
	sort.Ints(wins)
	rs.timing = newTimeDeps(wins, sinces)
	for _, s := range rs.segments {
		if !s.TimeDependent {
			continue
		}
		ts := timeSeg{index: s.Index, since: len(s.sinces) > 0}
		for _, ti := range s.wins {
			ts.wins |= traitBit(ti)
		}
		rs.timeSegs = append(rs.timeSegs, ts)
	}
	rs.cuts = traitCuts(rs)
	var canon strings.Builder
	fmt.Fprintf(&canon, "version %d\n", rs.version)
	traits := append([]*Trait(nil), rs.traits...)
	sort.Slice(traits, func(i, j int) bool { return traits[i].Name < traits[j].Name })
	for _, t := range traits {
		fmt.Fprintf(&canon, "trait %s = %s\n", t.Name, t.Def)
	}
	segs := append([]*Segment(nil), rs.segments...)
	sort.Slice(segs, func(i, j int) bool { return segs[i].ID < segs[j].ID })
	for _, s := range segs {
		fmt.Fprintf(&canon, "segment %s consent=%v topic=%q when %s\n", s.ID, s.RequiresConsent, s.Topic, s.When)
	}
	sum := sha256.Sum256([]byte(canon.String()))
	rs.hash = hex.EncodeToString(sum[:])
	rs.segIDs = make([]string, len(rs.segments))
	for i, s := range rs.segments {
		rs.segIDs[i] = s.ID
	}
	rs.segListID = SegmentListIDOf(rs.segIDs)
}

// SegmentListIDOf is the SegmentListID of a rule set with these segment
// ids, in this order.
func SegmentListIDOf(ids []string) uint64 {
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	for _, id := range ids {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(id)))])
		h.Write([]byte(id))
	}
	return binary.BigEndian.Uint64(h.Sum(nil))
}

// maxCuts bounds the comparisons flipTime tests per trait (a bitmask of
// their results): a trait compared with more constants than this goes
// back to a change per leaving bucket.
const maxCuts = 64

// traitCuts returns RuleSet.cuts: per windowed count or sum trait that
// every segment reads only through comparisons with constants, those
// comparisons (one of each operator and constant).
func traitCuts(rs *RuleSet) [][]traitCmp {
	cuts := make([][]traitCmp, len(rs.traits))
	opaque := make([]bool, len(rs.traits))
	for _, s := range rs.segments {
		for _, ti := range s.opaque {
			opaque[ti] = true
		}
		for _, tc := range s.cmps {
			// Past maxCuts the trait falls back anyway (below): stop
			// collecting, so that thousands of segments comparing it
			// with distinct constants cost no quadratic search.
			if len(cuts[tc.idx]) > maxCuts {
				continue
			}
			if !slices.ContainsFunc(cuts[tc.idx], func(o traitCmp) bool { return o.op == tc.op && o.c == tc.c }) {
				cuts[tc.idx] = append(cuts[tc.idx], tc)
			}
		}
	}
	for i, t := range rs.traits {
		if opaque[i] || t.Window == 0 || (t.agg != aggCount && t.agg != aggSum) || len(cuts[i]) > maxCuts {
			cuts[i] = nil
		}
	}
	return cuts
}
