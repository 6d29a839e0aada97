package keybrake

import (
	"fmt"
	"sort"
	"strings"
)

// PriceModel says how Keybrake knows what a call of an operation can cost
// before it forwards it. Every operation has exactly one.
type PriceModel string

const (
	// ModelFree: reads, and writes that move no money.
	ModelFree PriceModel = "free"
	// ModelBody: the amount is in the request (an amount field, SMS
	// segments, email recipients).
	ModelBody PriceModel = "body"
	// ModelLookup: the amount lives on an existing object, which Keybrake
	// fetches from the vendor before forwarding; if it cannot, it refuses.
	ModelLookup PriceModel = "lookup"
	// ModelBounded: an upper bound Keybrake enforces on the vendor (it sets
	// Twilio's TimeLimit to what it reserved).
	ModelBounded PriceModel = "bounded"
	// ModelFixed: a price per call from the pricing file; refused until
	// one is set.
	ModelFixed PriceModel = "fixed"
	// ModelForbidden: the call mints or reveals credentials, or can move
	// money that cannot be bounded. Never forwarded, whatever the pricing
	// file says.
	ModelForbidden PriceModel = "forbidden"
)

var priceModels = map[PriceModel]bool{ModelFree: true, ModelBody: true, ModelLookup: true,
	ModelBounded: true, ModelFixed: true, ModelForbidden: true}

// Pattern is an operation's path in segments; "*" stands for exactly one
// segment (an object id, an account SID).
type Pattern []string

// ParsePattern reads "/v1/payment_intents/*/capture".
func ParsePattern(path string) (Pattern, error) {
	segs, err := parsePattern(path)
	if err != nil {
		return nil, fmt.Errorf("path %q: %v", path, err)
	}
	return Pattern(segs), nil
}

// MustParsePattern is ParsePattern for patterns written in code.
func MustParsePattern(path string) Pattern {
	p, err := ParsePattern(path)
	if err != nil {
		panic(err)
	}
	return p
}

func (p Pattern) String() string { return "/" + strings.Join(p, "/") }

func (p Pattern) match(segs []string) bool {
	if len(p) != len(segs) {
		return false
	}
	for i, s := range p {
		if s != "*" && s != segs[i] {
			return false
		}
	}
	return true
}

// moreSpecific reports whether a beats b for a path both match: at the first
// segment where they differ, a literal beats "*". It depends on the
// patterns alone, so resolution is deterministic and, for distinct
// patterns, tie-free.
func moreSpecific(a, b Pattern) bool {
	for i := range a {
		if a[i] != b[i] {
			return b[i] == "*"
		}
	}
	return false
}

// Operation is one entry of a vendor's catalogue: a method and path pattern,
// the name it is granted and priced by, and its price model.
type Operation struct {
	Vendor  string
	Name    string // "payment_intents.create", unique in its vendor's catalogue
	Method  string
	Pattern Pattern
	Model   PriceModel
	// Note says in one line how the operation is priced, or why it is
	// forbidden. `keybrake pricing` and issue-time errors show it.
	Note string
	// Pricer prices a call from the request (and, for lookups, the object
	// it acts on); nil for free operations without conditions, and for
	// forbidden and purely fixed ones.
	Pricer Pricer
	// Fixed is a price per call from the pricing file, added to what the
	// Pricer computes; for ModelFixed it is the whole price and the
	// operation is refused while HasFixed is false.
	Fixed    Micros
	HasFixed bool
	// Added is true for an operation the pricing file added to the
	// catalogue (always ModelFixed).
	Added bool
}

// FullName is the operation's name qualified by its vendor, as the pricing
// file writes it: "stripe.payment_intents.create".
func (o *Operation) FullName() string { return o.Vendor + "." + o.Name }

// Is reports whether name names the operation, bare or vendor-qualified.
func (o *Operation) Is(name string) bool {
	return name == o.Name || name == o.FullName()
}

// Path is the operation's path pattern as text.
func (o *Operation) Path() string { return o.Pattern.String() }

// Catalog is one vendor's operations: the single source of truth for what
// Keybrake forwards. A path no entry matches does not exist.
type Catalog struct {
	vendor    string
	normalize func(string) string
	ops       []*Operation
	byName    map[string]*Operation
	byShape   map[shapeKey][]*Operation
}

// NewCatalog validates a vendor's operations. normalize, when not nil, maps
// equivalent paths to one form before matching (Twilio: Messages.json,
// Messages.xml and Messages are one operation); patterns must already be in
// that form.
func NewCatalog(vendor string, normalize func(path string) string, ops []*Operation) (*Catalog, error) {
	if normalize == nil {
		normalize = func(p string) string { return p }
	}
	c := &Catalog{vendor: vendor, normalize: normalize, byName: map[string]*Operation{}, byShape: map[shapeKey][]*Operation{}}
	for _, op := range ops {
		if err := c.Add(op); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// MustCatalog is NewCatalog for catalogues written in code.
func MustCatalog(vendor string, normalize func(path string) string, ops []*Operation) *Catalog {
	c, err := NewCatalog(vendor, normalize, ops)
	if err != nil {
		panic(err)
	}
	return c
}

// shapeKey groups operations by method and number of segments: only those
// can match a path.
type shapeKey struct {
	method string
	n      int
}

func shape(method string, n int) shapeKey { return shapeKey{method, n} }

// Add adds an operation, refusing a duplicate name or method and pattern.
// Only before serving: a Catalog is read concurrently afterwards.
func (c *Catalog) Add(op *Operation) error {
	if op.Vendor == "" {
		op.Vendor = c.vendor
	}
	where := fmt.Sprintf("%s catalogue, %s", c.vendor, op.Name)
	switch {
	case op.Vendor != c.vendor:
		return fmt.Errorf("%s: vendor %q", where, op.Vendor)
	case !ValidOperationName(op.Name):
		return fmt.Errorf("%s: not a valid operation name (lower-case dotted, such as payment_intents.create)", where)
	case !ruleMethods[op.Method]:
		return fmt.Errorf("%s: method %q", where, op.Method)
	case len(op.Pattern) == 0:
		return fmt.Errorf("%s: no path", where)
	case !priceModels[op.Model]:
		return fmt.Errorf("%s: unknown price model %q", where, op.Model)
	case op.Model == ModelForbidden && (op.Pricer != nil || op.HasFixed):
		return fmt.Errorf("%s: a forbidden operation cannot be priced", where)
	case op.Model == ModelFixed && op.Pricer != nil:
		return fmt.Errorf("%s: a fixed operation has no pricer", where)
	case op.Model != ModelFree && op.Model != ModelFixed && op.Model != ModelForbidden && op.Pricer == nil:
		return fmt.Errorf("%s: a %s operation needs a pricer", where, op.Model)
	}
	if _, err := ParsePattern(op.Pattern.String()); err != nil {
		return fmt.Errorf("%s: %v", where, err)
	}
	if n := c.normalize(op.Path()); n != op.Path() {
		return fmt.Errorf("%s: path %s is not in normal form (%s)", where, op.Path(), n)
	}
	if _, dup := c.byName[op.Name]; dup {
		return fmt.Errorf("%s: name given twice", where)
	}
	k := shape(op.Method, len(op.Pattern))
	for _, other := range c.byShape[k] {
		if other.Pattern.String() == op.Pattern.String() {
			return fmt.Errorf("%s: %s %s is already %s", where, op.Method, op.Path(), other.Name)
		}
	}
	c.ops = append(c.ops, op)
	c.byName[op.Name] = op
	c.byShape[k] = append(c.byShape[k], op)
	return nil
}

// Vendor is the vendor whose catalogue this is.
func (c *Catalog) Vendor() string { return c.vendor }

// Operations lists the catalogue in declaration order.
func (c *Catalog) Operations() []*Operation { return append([]*Operation(nil), c.ops...) }

// Lookup finds an operation by name, bare ("charges.create") or
// vendor-qualified ("stripe.charges.create").
func (c *Catalog) Lookup(name string) *Operation {
	if op, ok := c.byName[name]; ok {
		return op
	}
	return c.byName[strings.TrimPrefix(name, c.vendor+".")]
}

// Normalize maps a canonical vendor path to the form patterns are written in.
func (c *Catalog) Normalize(path string) string { return c.normalize(path) }

// Resolve returns the one operation a call resolves to, or nil when no entry
// matches: among the entries matching the normalised path, the most
// specific (at the first segment where two differ, a literal beats "*").
// params are the path's values for the pattern's "*" segments, in order.
func (c *Catalog) Resolve(method, path string) (op *Operation, params []string) {
	segs := splitSegments(c.normalize(path))
	op = c.resolve(method, segs)
	if op == nil {
		return nil, nil
	}
	for i, s := range op.Pattern {
		if s == "*" {
			params = append(params, segs[i])
		}
	}
	return op, params
}

func (c *Catalog) resolve(method string, segs []string) *Operation {
	var best *Operation
	for _, op := range c.byShape[shape(method, len(segs))] {
		if op.Pattern.match(segs) && (best == nil || moreSpecific(op.Pattern, best.Pattern)) {
			best = op
		}
	}
	return best
}

func splitSegments(path string) []string {
	if len(path) < 2 || path[0] != '/' {
		return nil
	}
	return strings.Split(path[1:], "/")
}

// wildcard stands for a "*" when a rule is checked against the catalogue. It
// can never be a literal segment of a pattern (patterns are canonical), so a
// path built with it matches only the patterns with "*" there.
const wildcard = "\x00"

// Covers lists the operations a rule grants. An operation rule grants the
// operation it names. A path rule R grants operation O iff some path R
// matches resolves to O, which is exact to compute: build the intersection
// of R and O's pattern, with every "*" left in it replaced by a segment no
// pattern has as a literal; R grants O iff that one path resolves to O
// (specificity depends on the patterns alone, so if O loses there it loses
// on every path of the intersection). The rule's path is normalised first,
// as a call's path would be.
func (c *Catalog) Covers(r Rule) []*Operation {
	if r.Op != "" {
		if op := c.Lookup(r.Op); op != nil {
			return []*Operation{op}
		}
		return nil
	}
	segs := splitSegments(c.normalize(r.Path()))
	var out []*Operation
	for _, op := range c.byShape[shape(r.Method, len(segs))] {
		path, ok := intersect(segs, op.Pattern)
		if ok && c.resolve(r.Method, path) == op {
			out = append(out, op)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Path() < out[j].Path() })
	return out
}

// intersect returns the most general path both segment lists match, with
// wildcard where both have "*".
func intersect(a []string, b Pattern) ([]string, bool) {
	out := make([]string, len(a))
	for i := range a {
		switch {
		case a[i] == b[i] && a[i] == "*":
			out[i] = wildcard
		case a[i] == b[i], b[i] == "*":
			out[i] = a[i]
		case a[i] == "*":
			out[i] = b[i]
		default:
			return nil, false
		}
	}
	return out, true
}

// Overlapping lists the operations of the same method whose patterns share
// at least one path with p.
func (c *Catalog) Overlapping(method string, p Pattern) []*Operation {
	var out []*Operation
	for _, op := range c.byShape[shape(method, len(p))] {
		if _, ok := intersect(p, op.Pattern); ok {
			out = append(out, op)
		}
	}
	return out
}
