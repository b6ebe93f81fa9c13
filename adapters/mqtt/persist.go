package mqtt

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"github.com/switchboardhq/switchboard/core"
	"github.com/switchboardhq/switchboard/core/store"
)

// Persistent sessions and retained messages live in the store's extension
// keyspace, next to the channel logs they point into:
//
//	mqtt/session/<client id>  → sessionRecord (JSON)
//	mqtt/retained/<channel>   → retainedRecord (JSON)
//
// A session record holds the subscriptions and, per channel, the position
// up to which the client has received (and, for QoS 1 and 2, acknowledged)
// every message; resuming replays the log from there.
const (
	sessionKeyPrefix  = "mqtt/session/"
	retainedKeyPrefix = "mqtt/retained/"
)

type sessionRecord struct {
	Version        byte                 `json:"v"`
	Expiry         uint32               `json:"exp"`
	Subs           []subscriptionRecord `json:"subs,omitempty"`
	Positions      map[string]string    `json:"pos,omitempty"`
	DisconnectedAt int64                `json:"dis,omitempty"`
	// SavedAt is when a connected session was written (ms).
	SavedAt int64 `json:"at,omitempty"`
}

type subscriptionRecord struct {
	Filter         string `json:"f"`
	QoS            byte   `json:"q,omitempty"`
	NoLocal        bool   `json:"nl,omitempty"`
	RetainAsPub    bool   `json:"rap,omitempty"`
	RetainHandling byte   `json:"rh,omitempty"`
	Identifier     int    `json:"id,omitempty"`
}

type retainedRecord struct {
	ID          string            `json:"id,omitempty"`
	Name        string            `json:"name,omitempty"`
	Data        []byte            `json:"data,omitempty"`
	Encoding    string            `json:"enc,omitempty"`
	ContentType string            `json:"ct,omitempty"`
	ClientID    string            `json:"cid,omitempty"`
	Timestamp   int64             `json:"ts"`
	Extras      map[string]string `json:"x,omitempty"`
	Position    string            `json:"pos"`
}

// persistence reads and writes session and retained records. A nil store
// (memory durability) keeps everything in memory only.
type persistence struct {
	st *store.Store
}

func (p persistence) enabled() bool { return p.st != nil }

func (p persistence) loadSessions() (map[string]sessionRecord, error) {
	out := map[string]sessionRecord{}
	if p.st == nil {
		return out, nil
	}
	var decodeErr error
	err := p.st.ExtScan([]byte(sessionKeyPrefix), func(key, value []byte) bool {
		var rec sessionRecord
		if err := json.Unmarshal(value, &rec); err != nil {
			decodeErr = fmt.Errorf("session %q: %w", key, err)
			return false
		}
		out[string(key[len(sessionKeyPrefix):])] = rec
		return true
	})
	if err == nil {
		err = decodeErr
	}
	if err != nil {
		return nil, fmt.Errorf("loading MQTT sessions: %w", err)
	}
	return out, nil
}

// writeSessions stores (or, for a nil record, deletes) session records in
// one batch.
func (p persistence) writeSessions(recs map[string]*sessionRecord, sync bool) error {
	if p.st == nil || len(recs) == 0 {
		return nil
	}
	b := p.st.NewBatch()
	defer b.Close()
	for id, rec := range recs {
		key := []byte(sessionKeyPrefix + id)
		if rec == nil {
			b.Delete(key)
			continue
		}
		v, err := json.Marshal(rec)
		if err != nil {
			return fmt.Errorf("encoding session %q: %w", id, err)
		}
		b.Set(key, v)
	}
	if err := p.st.Commit(b, sync); err != nil {
		return fmt.Errorf("writing MQTT sessions: %w", err)
	}
	return nil
}

// retainedStore holds the retained message of each channel that has one.
// Reads come from memory; writes go through to the store.
type retainedStore struct {
	p  persistence
	mu sync.RWMutex
	m  map[string]*core.Message
}

func newRetainedStore(p persistence) (*retainedStore, error) {
	r := &retainedStore{p: p, m: map[string]*core.Message{}}
	if p.st == nil {
		return r, nil
	}
	var decodeErr error
	err := p.st.ExtScan([]byte(retainedKeyPrefix), func(key, value []byte) bool {
		var rec retainedRecord
		if err := json.Unmarshal(value, &rec); err != nil {
			decodeErr = fmt.Errorf("retained %q: %w", key, err)
			return false
		}
		ch := string(key[len(retainedKeyPrefix):])
		r.m[ch] = &core.Message{
			ID: rec.ID, Name: rec.Name, Data: rec.Data, Encoding: rec.Encoding, ContentType: rec.ContentType,
			ClientID: rec.ClientID, Timestamp: rec.Timestamp, Extras: rec.Extras, Channel: ch, Position: rec.Position,
		}
		return true
	})
	if err == nil {
		err = decodeErr
	}
	if err != nil {
		return nil, fmt.Errorf("loading retained messages: %w", err)
	}
	return r, nil
}

// set makes m the retained message of its channel; a nil m clears it.
func (r *retainedStore) set(channelName string, m *core.Message) error {
	if r.p.st != nil {
		b := r.p.st.NewBatch()
		defer b.Close()
		key := []byte(retainedKeyPrefix + channelName)
		if m == nil {
			b.Delete(key)
		} else {
			v, err := json.Marshal(retainedRecord{
				ID: m.ID, Name: m.Name, Data: m.Data, Encoding: m.Encoding, ContentType: m.ContentType,
				ClientID: m.ClientID, Timestamp: m.Timestamp, Extras: m.Extras, Position: m.Position,
			})
			if err != nil {
				return err
			}
			b.Set(key, v)
		}
		if err := r.p.st.Commit(b, true); err != nil {
			return fmt.Errorf("storing the retained message of %q: %w", channelName, err)
		}
	}
	r.mu.Lock()
	if m == nil {
		delete(r.m, channelName)
	} else {
		r.m[channelName] = m
	}
	r.mu.Unlock()
	return nil
}

// matching returns the retained messages whose channel the filter matches.
func (r *retainedStore) matching(filter string) []*core.Message {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if !strings.ContainsAny(filter, "+#") {
		if m := r.m[filter]; m != nil {
			return []*core.Message{m}
		}
		return nil
	}
	var out []*core.Message
	for ch, m := range r.m {
		if matchTopic(filter, ch) {
			out = append(out, m)
		}
	}
	return out
}

func (r *retainedStore) len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.m)
}
