package auth

import (
	"strings"

	"github.com/switchboardhq/switchboard/core/apierr"
)

// Operation is something a client may do on a channel (or queue).
type Operation string

// The operations a capability can grant. None implies another.
const (
	OpPublish   Operation = "publish"
	OpSubscribe Operation = "subscribe"
	OpPresence  Operation = "presence"
	OpHistory   Operation = "history"
	OpQueue     Operation = "queue"
	OpAdmin     Operation = "admin"
)

// WildcardOperation is the name that stands for every operation in the JSON
// form of a capability and in [ParseOperations].
const WildcardOperation = "*"

// AllOperations returns every operation in canonical order. The returned
// slice is new on every call.
func AllOperations() []Operation {
	return []Operation{OpPublish, OpSubscribe, OpPresence, OpHistory, OpQueue, OpAdmin}
}

// opSet is a set of operations as a bit mask, in canonical order.
type opSet uint8

// bit returns the bit of op, or 0 for an unknown operation.
func (op Operation) bit() opSet {
	switch op {
	case OpPublish:
		return 1 << 0
	case OpSubscribe:
		return 1 << 1
	case OpPresence:
		return 1 << 2
	case OpHistory:
		return 1 << 3
	case OpQueue:
		return 1 << 4
	case OpAdmin:
		return 1 << 5
	}
	return 0
}

// Valid reports whether op is one of the defined operations.
func (op Operation) Valid() bool { return op.bit() != 0 }

// setOf returns the set of the valid operations in ops.
func setOf(ops []Operation) opSet {
	var s opSet
	for _, op := range ops {
		s |= op.bit()
	}
	return s
}

// list returns the operations of s in canonical order.
func (s opSet) list() []Operation {
	var out []Operation
	for _, op := range AllOperations() {
		if s&op.bit() != 0 {
			out = append(out, op)
		}
	}
	return out
}

// ParseOperation parses the name of one operation. An unknown name is a
// BadRequest error.
func ParseOperation(s string) (Operation, error) {
	op := Operation(s)
	if !op.Valid() {
		return "", apierr.New(apierr.BadRequest, "unknown operation %s (want one of %s)", quote(s), opNames())
	}
	return op, nil
}

// ParseOperations parses a list of operation names, where "*" stands for
// every operation. The result is deduplicated and in canonical order; an
// empty list gives an empty result.
func ParseOperations(names []string) ([]Operation, error) {
	var s opSet
	for _, n := range names {
		if n == WildcardOperation {
			s |= setOf(AllOperations())
			continue
		}
		op, err := ParseOperation(n)
		if err != nil {
			return nil, err
		}
		s |= op.bit()
	}
	return s.list(), nil
}

// opNames lists the operation names for error messages.
func opNames() string {
	all := AllOperations()
	names := make([]string, len(all))
	for i, op := range all {
		names[i] = string(op)
	}
	return strings.Join(names, ", ")
}
