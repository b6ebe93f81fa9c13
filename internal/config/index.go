package config

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// index maps the key paths of a YAML document to their lines, so that
// problems can be reported at the line where the value was written.
type index struct {
	file   string           // file name; empty when parsing bytes
	lines  map[string]int   // key path -> line of its key
	byLine map[int][]*entry // line -> keys and items on it, outermost first
}

type entry struct {
	path  string
	key   string // mapping key; empty for list items
	value *yaml.Node
}

func buildIndex(file string, doc *yaml.Node) *index {
	ix := &index{file: file, lines: map[string]int{}, byLine: map[int][]*entry{}}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		ix.walk("", doc.Content[0])
	}
	return ix
}

// walk records the keys and list items under n. Aliases are not followed.
func (ix *index) walk(path string, n *yaml.Node) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := joinKey(path, k.Value)
			ix.add(&entry{path: p, key: k.Value, value: v}, k.Line)
			ix.walk(p, v)
		}
	case yaml.SequenceNode:
		for i, v := range n.Content {
			p := indexPath(path, i)
			ix.add(&entry{path: p, value: v}, v.Line)
			ix.walk(p, v)
		}
	}
}

// entry returns the first entry recorded for path, or nil.
func (ix *index) entry(path string) *entry {
	line, ok := ix.lines[path]
	if !ok {
		return nil
	}
	for _, e := range ix.byLine[line] {
		if e.path == path {
			return e
		}
	}
	return nil
}

func (ix *index) add(e *entry, line int) {
	if _, ok := ix.lines[e.path]; !ok {
		ix.lines[e.path] = line
	}
	ix.byLine[line] = append(ix.byLine[line], e)
	if e.value.Line != line {
		ix.byLine[e.value.Line] = append(ix.byLine[e.value.Line], e)
	}
}

// at names a line of the document as a source.
func (ix *index) at(line int) string {
	if ix.file == "" {
		return "line " + strconv.Itoa(line)
	}
	return ix.file + ":" + strconv.Itoa(line)
}

// typeErrors turns the decoder's "line N: ..." messages into FieldErrors
// naming the key path.
func (ix *index) typeErrors(te *yaml.TypeError) []*FieldError {
	var out []*FieldError
	for _, msg := range te.Errors {
		line, col, rest, ok := splitLine(msg)
		if !ok {
			out = append(out, &FieldError{Err: errors.New(msg)})
			continue
		}
		fe := &FieldError{Source: ix.at(line)}
		if name, typ, ok := unknownField(rest); ok {
			fe.Path = ix.find(line, func(e *entry) bool { return e.key == name })
			fe.Err = unknownKeyError(name, typ)
		} else if name, first, ok := duplicateKey(rest); ok {
			fe.Path = ix.find(line, func(e *entry) bool { return e.key == name })
			fe.Err = fmt.Errorf("defined again (first at line %d)", first)
		} else {
			fe.Path = ix.valuePath(line, col, rest)
			fe.Err = errors.New(rest)
		}
		out = append(out, fe)
	}
	return out
}

// find returns the path of the last entry on line satisfying match, or of
// the first entry on line if none does.
func (ix *index) find(line int, match func(*entry) bool) string {
	entries := ix.byLine[line]
	for i := len(entries) - 1; i >= 0; i-- {
		if match(entries[i]) {
			return entries[i].path
		}
	}
	if len(entries) > 0 {
		return entries[0].path
	}
	return ""
}

// valuePath guesses which value on line an error is about: the one at the
// given column if known, else one whose text the message quotes, else the
// outermost key on the line.
func (ix *index) valuePath(line, col int, msg string) string {
	return ix.find(line, func(e *entry) bool {
		v := e.value
		if col > 0 {
			return v.Line == line && v.Column == col
		}
		return v.Kind == yaml.ScalarNode && v.Value != "" &&
			(strings.Contains(msg, "`"+v.Value+"`") || strings.Contains(msg, strconv.Quote(v.Value)))
	})
}

// splitLine splits "line N: [column C: ]message".
func splitLine(msg string) (line, col int, rest string, ok bool) {
	s, found := strings.CutPrefix(msg, "line ")
	if !found {
		return 0, 0, "", false
	}
	num, rest, found := strings.Cut(s, ": ")
	if !found {
		return 0, 0, "", false
	}
	line, err := strconv.Atoi(num)
	if err != nil {
		return 0, 0, "", false
	}
	if s, found := strings.CutPrefix(rest, "column "); found {
		if num, r, found := strings.Cut(s, ": "); found {
			if c, err := strconv.Atoi(num); err == nil {
				col, rest = c, r
			}
		}
	}
	return line, col, rest, true
}

// unknownField parses the decoder's "field X not found in type T".
func unknownField(msg string) (name, typ string, ok bool) {
	s, found := strings.CutPrefix(msg, "field ")
	if !found {
		return "", "", false
	}
	const mid = " not found in type "
	i := strings.LastIndex(s, mid)
	if i < 0 {
		return "", "", false
	}
	return s[:i], s[i+len(mid):], true
}

// duplicateKey parses the decoder's `mapping key "x" already defined at line N`.
func duplicateKey(msg string) (name string, first int, ok bool) {
	s, found := strings.CutPrefix(msg, "mapping key ")
	if !found {
		return "", 0, false
	}
	const mid = " already defined at line "
	i := strings.LastIndex(s, mid)
	if i < 0 {
		return "", 0, false
	}
	name, err := strconv.Unquote(s[:i])
	if err != nil {
		return "", 0, false
	}
	first, err = strconv.Atoi(s[i+len(mid):])
	if err != nil {
		return "", 0, false
	}
	return name, first, true
}

// unknownKeyError describes an unknown key, suggesting a known key of the
// same type when one is close.
func unknownKeyError(name, typ string) error {
	var t reflect.Type
	switch typ {
	case "config.Config":
		t = reflect.TypeFor[Config]()
	case "config.TLS":
		t = reflect.TypeFor[TLS]()
	case "config.CORS":
		t = reflect.TypeFor[CORS]()
	case "config.Log":
		t = reflect.TypeFor[Log]()
	case "config.Key":
		t = reflect.TypeFor[Key]()
	case "config.Namespace":
		t = reflect.TypeFor[Namespace]()
	case "config.Queue":
		t = reflect.TypeFor[Queue]()
	}
	if t != nil && len(name) <= 64 {
		// Suggest a key at most a third of the name's length away.
		best, bestDist := "", len(name)/3+1
		for _, k := range sortedKeys(yamlKeys(t)) {
			if d := editDistance(normalizeKey(name), normalizeKey(k)); d < bestDist {
				best, bestDist = k, d
			}
		}
		if best != "" {
			return fmt.Errorf("unknown key (did you mean %q?)", best)
		}
	}
	return errors.New("unknown key")
}

func normalizeKey(s string) string {
	return strings.ToLower(strings.NewReplacer("-", "", "_", "").Replace(s))
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// yamlKeys returns the YAML keys of a struct type.
func yamlKeys(t reflect.Type) map[string]bool {
	keys := map[string]bool{}
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name != "" && name != "-" {
			keys[name] = true
		}
	}
	return keys
}

// joinKey appends a mapping key to a path: "a.b", or a["x:y"] when the key
// is not a plain word.
func joinKey(parent, key string) string {
	plain := key != ""
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !(isLower(c) || isUpper(c) || isDigit(c) || c == '_' || c == '-') {
			plain = false
			break
		}
	}
	switch {
	case !plain:
		return parent + "[" + strconv.Quote(key) + "]"
	case parent == "":
		return key
	default:
		return parent + "." + key
	}
}

// indexPath appends a list index to a path: "keys[2]".
func indexPath(parent string, i int) string {
	return parent + "[" + strconv.Itoa(i) + "]"
}

// parentPath removes the last element of a path; it returns "" at the top.
func parentPath(p string) string {
	if strings.HasSuffix(p, "]") {
		// The element may be a quoted key containing '[': find the '[' that
		// opens it.
		if strings.HasSuffix(p, `"]`) {
			for i := strings.LastIndex(p, `["`); i >= 0; i = strings.LastIndex(p[:i], `["`) {
				if _, err := strconv.Unquote(p[i+1 : len(p)-1]); err == nil {
					return p[:i]
				}
			}
			return ""
		}
		if i := strings.LastIndexByte(p, '['); i >= 0 {
			return p[:i]
		}
		return ""
	}
	if i := strings.LastIndexByte(p, '.'); i >= 0 {
		return p[:i]
	}
	return ""
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
