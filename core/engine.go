// Package core is Switchboard's channel engine. It keeps a serial-ordered
// log per channel, sequences publishes, fans messages out to subscribers,
// serves rewind, resume and history, tracks presence and enforces
// capabilities. It knows nothing about any protocol: adapters reach it
// through the small API of Engine and Conn (see docs/architecture.md).
package core

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboardhq/switchboard/core/apierr"
	"github.com/switchboardhq/switchboard/core/auth"
	"github.com/switchboardhq/switchboard/core/channel"
	"github.com/switchboardhq/switchboard/core/store"
)

// Durability says when a publish is acknowledged.
type Durability int

const (
	// DurabilityFsync acknowledges after the batch holding the message was
	// fsynced (group commit: one sync per batch).
	DurabilityFsync Durability = iota
	// DurabilityBatch acknowledges once the message is written to the store;
	// the store is fsynced every FlushInterval.
	DurabilityBatch
	// DurabilityMemory keeps logs in memory only.
	DurabilityMemory
)

// ParseDurability parses "fsync", "batch" or "memory".
func ParseDurability(s string) (Durability, error) {
	switch s {
	case "fsync":
		return DurabilityFsync, nil
	case "batch":
		return DurabilityBatch, nil
	case "memory":
		return DurabilityMemory, nil
	}
	return 0, fmt.Errorf("unknown durability %q (want fsync, batch or memory)", s)
}

func (d Durability) String() string {
	switch d {
	case DurabilityFsync:
		return "fsync"
	case DurabilityBatch:
		return "batch"
	case DurabilityMemory:
		return "memory"
	}
	return fmt.Sprintf("Durability(%d)", int(d))
}

// NamespaceRules are the per-namespace rules from the configuration.
type NamespaceRules struct {
	// Persisted namespaces keep history for Retention in the durable store.
	Persisted bool
	// Retention of a persisted namespace; 0 keeps history forever.
	Retention time.Duration
	// MaxMessageSize overrides the engine default when > 0.
	MaxMessageSize int
}

// ChannelEventKind is a channel lifecycle event.
type ChannelEventKind string

// Lifecycle events.
const (
	ChannelOpened ChannelEventKind = "channel.opened"
	ChannelClosed ChannelEventKind = "channel.closed"
)

// ChannelEvent reports a channel becoming active or inactive.
type ChannelEvent struct {
	Kind    ChannelEventKind
	Channel string
	Time    time.Time
	// Position is set on ChannelOpened: the channel's position when it
	// opened. Attaching from it (AttachOptions.From) delivers every message
	// published since, including the one whose publish opened the channel.
	Position string
}

// Options configure an Engine. Zero values take the documented defaults.
type Options struct {
	Region     string     // default "local"
	Durability Durability // default DurabilityFsync
	// Store is the durable store; required unless Durability is memory.
	// The engine does not close it.
	Store         *store.Store
	FlushInterval time.Duration // batch mode sync interval; default 10ms
	ResumeWindow  time.Duration // default 2m
	DedupWindow   time.Duration // default 2m
	// DedupMaxPerChannel bounds the idempotency index of one channel;
	// default 100000 ids. Beyond it the oldest ids are forgotten early.
	DedupMaxPerChannel int
	PresenceGrace      time.Duration // default 15s
	// ConnectionStateTTL is how long the id of a dropped connection stays
	// reserved for a new connection of the same key and client to take
	// back (see ConnectOptions.ConnectionID); default 2m.
	ConnectionStateTTL time.Duration
	MaxMessageSize     int // default 64 KiB
	SubscriberBuffer   int // default 1024 events per connection
	// ChannelMemoryLimit is how many recent messages a channel keeps in
	// memory: its whole log in memory mode (default 1000); in durable modes
	// a cache of the store's tail of at most 128.
	ChannelMemoryLimit int
	// Namespace returns the rules of a namespace (the part of a channel name
	// before the first ':'). Nil means default rules everywhere.
	Namespace func(namespace string) NamespaceRules
	// Auth authenticates credentials for Engine.Authenticate. Required for
	// adapters; tests may leave it nil and pass identities directly.
	Auth *auth.Authenticator
	// OnChannelEvent, if set, is called for lifecycle events. It must not
	// block.
	OnChannelEvent func(ChannelEvent)
	Logger         *slog.Logger
	// Registerer receives the engine's Prometheus metrics; nil disables them.
	Registerer prometheus.Registerer
	// JanitorInterval is how often idle channels are closed and retention is
	// enforced; default 1s.
	JanitorInterval time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

func (o *Options) setDefaults() {
	if o.Region == "" {
		o.Region = "local"
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = 10 * time.Millisecond
	}
	if o.ResumeWindow <= 0 {
		o.ResumeWindow = 2 * time.Minute
	}
	if o.DedupWindow <= 0 {
		o.DedupWindow = 2 * time.Minute
	}
	if o.DedupMaxPerChannel <= 0 {
		o.DedupMaxPerChannel = 100000
	}
	if o.PresenceGrace <= 0 {
		o.PresenceGrace = 15 * time.Second
	}
	if o.ConnectionStateTTL <= 0 {
		o.ConnectionStateTTL = 2 * time.Minute
	}
	if o.MaxMessageSize <= 0 {
		o.MaxMessageSize = 64 * 1024
	}
	if o.SubscriberBuffer <= 0 {
		o.SubscriberBuffer = 1024
	}
	if o.ChannelMemoryLimit <= 0 {
		o.ChannelMemoryLimit = 1000
	}
	if o.JanitorInterval <= 0 {
		o.JanitorInterval = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Namespace == nil {
		o.Namespace = func(string) NamespaceRules { return NamespaceRules{} }
	}
}

// ErrClosed is returned by operations on a closed engine or connection.
var ErrClosed = apierr.New(apierr.Unavailable, "server is shutting down")

const tableShards = 64

type tableShard struct {
	mu       sync.Mutex
	channels map[string]*channelState
}

// Engine is the channel engine. It is safe for concurrent use.
type Engine struct {
	opts    Options
	log     *slog.Logger
	seed    maphash.Seed
	table   [tableShards]tableShard
	commit  *committer // nil in memory mode
	metrics *metrics

	// conns tracks live and recently dropped connections for presence grace
	// and connection ids.
	connMu sync.Mutex
	conns  map[string]*connRecord

	closing atomic.Bool
	stop    chan struct{}
	wg      sync.WaitGroup
	active  atomic.Int64
}

// New starts an engine. Call Close to stop it.
func New(opts Options) (*Engine, error) {
	opts.setDefaults()
	if opts.Durability != DurabilityMemory && opts.Store == nil {
		return nil, errors.New("core: a store is required unless durability is memory")
	}
	if opts.Durability == DurabilityMemory {
		opts.Store = nil
	}
	e := &Engine{
		opts:  opts,
		log:   opts.Logger,
		seed:  maphash.MakeSeed(),
		stop:  make(chan struct{}),
		conns: make(map[string]*connRecord),
	}
	for i := range e.table {
		e.table[i].channels = make(map[string]*channelState)
	}
	m, err := newMetrics(opts.Registerer, e)
	if err != nil {
		return nil, err
	}
	e.metrics = m
	if opts.Store != nil {
		e.commit = newCommitter(e, runtime.GOMAXPROCS(0))
		e.commit.start()
	}
	e.wg.Add(1)
	go e.janitor()
	return e, nil
}

// Region returns the name of the region this engine sequences for.
func (e *Engine) Region() string { return e.opts.Region }

// Options returns the effective options (with defaults applied).
func (e *Engine) Options() Options { return e.opts }

// Close stops the engine: new operations fail with ErrClosed, pending
// publishes are committed and acknowledged, the store is synced, and every
// background goroutine exits. It does not close the store.
func (e *Engine) Close(ctx context.Context) error {
	if !e.closing.CompareAndSwap(false, true) {
		return nil
	}
	var err error
	if e.commit != nil {
		err = e.commit.close(ctx)
	}
	close(e.stop)
	e.wg.Wait()
	e.connMu.Lock()
	for _, rec := range e.conns {
		if rec.graceTimer != nil {
			rec.graceTimer.Stop()
		}
	}
	e.connMu.Unlock()
	if e.opts.Store != nil {
		if serr := e.opts.Store.Sync(); serr != nil && err == nil {
			err = fmt.Errorf("core: final sync: %w", serr)
		}
	}
	e.metrics.unregister()
	return err
}

func (e *Engine) now() time.Time { return e.opts.Now() }

func (e *Engine) shardFor(name string) *tableShard {
	return &e.table[maphash.String(e.seed, name)%tableShards]
}

// channel returns the open state of a channel, opening it if needed. The
// returned state may be closed concurrently; callers lock it and retry when
// they find it closed (see withChannel).
func (e *Engine) channel(name string) (*channelState, error) {
	sh := e.shardFor(name)
	sh.mu.Lock()
	ch, ok := sh.channels[name]
	if !ok {
		ch = newChannelState(e, name)
		sh.channels[name] = ch
	}
	sh.mu.Unlock()
	ch.initOnce.Do(ch.init)
	if ch.initErr != nil {
		sh.mu.Lock()
		if sh.channels[name] == ch {
			delete(sh.channels, name)
		}
		sh.mu.Unlock()
		return nil, ch.initErr
	}
	if ch.announced.CompareAndSwap(false, true) {
		// Outside every lock, so that the callback may call the engine.
		e.emit(ChannelOpened, name, ch.opened)
	}
	return ch, nil
}

// lookup returns the channel if it is open, without opening it.
func (e *Engine) lookup(name string) *channelState {
	sh := e.shardFor(name)
	sh.mu.Lock()
	ch := sh.channels[name]
	sh.mu.Unlock()
	if ch == nil {
		return nil
	}
	ch.initOnce.Do(ch.init)
	if ch.initErr != nil {
		return nil
	}
	return ch
}

// withChannel runs fn with the channel's lock held, opening the channel if
// needed and retrying if it was closed concurrently.
func (e *Engine) withChannel(name string, fn func(ch *channelState) error) error {
	for {
		if e.closing.Load() {
			return ErrClosed
		}
		ch, err := e.channel(name)
		if err != nil {
			return err
		}
		ch.mu.Lock()
		if ch.closed {
			ch.mu.Unlock()
			continue
		}
		err = fn(ch)
		ch.mu.Unlock()
		return err
	}
}

// durableCacheLimit bounds the in-memory log of a channel in durable modes,
// where it only caches the store's tail for short rewinds and resumes:
// keeping more costs GC time on every publish for little gain.
const durableCacheLimit = 128

// memoryLimit is how many recent messages a channel keeps in memory: its
// whole log in memory mode, a cache of the store's tail otherwise.
func (e *Engine) memoryLimit() int {
	if e.opts.Store != nil {
		return min(e.opts.ChannelMemoryLimit, durableCacheLimit)
	}
	return e.opts.ChannelMemoryLimit
}

func (e *Engine) rules(name string) NamespaceRules {
	return e.opts.Namespace(channel.Namespace(name))
}

func (e *Engine) maxMessageSize(r NamespaceRules) int {
	if r.MaxMessageSize > 0 {
		return r.MaxMessageSize
	}
	return e.opts.MaxMessageSize
}

// retention is how long a channel's log is kept.
func (e *Engine) retention(r NamespaceRules) (d time.Duration, forever bool) {
	// The log must cover the dedup window too: ids are recovered from it
	// when a closed channel reopens.
	floor := max(e.opts.ResumeWindow, e.opts.DedupWindow)
	if r.Persisted && e.opts.Store != nil {
		if r.Retention == 0 {
			return 0, true
		}
		return max(r.Retention, floor), false
	}
	return floor, false
}

func (e *Engine) emit(kind ChannelEventKind, name, pos string) {
	e.log.Debug("channel lifecycle", "event", string(kind), "channel", name)
	if e.opts.OnChannelEvent != nil {
		e.opts.OnChannelEvent(ChannelEvent{Kind: kind, Channel: name, Time: e.now(), Position: pos})
	}
}

// ChannelInfo describes an active channel.
type ChannelInfo struct {
	Name        string `json:"name"`
	Subscribers int    `json:"subscribers"`
	Presence    int    `json:"presenceMembers"`
	// Position is the channel's position after its latest message.
	Position string `json:"position,omitempty"`
	// LastActive is when the channel last saw a publish or attach, in Unix ms.
	LastActive int64 `json:"lastActive"`
}

// ActiveChannels lists active channels whose names start with prefix, in
// name order, at most limit of them (0 = no limit), starting after the
// name `after` (for pagination).
func (e *Engine) ActiveChannels(prefix, after string, limit int) []ChannelInfo {
	var out []ChannelInfo
	for i := range e.table {
		sh := &e.table[i]
		sh.mu.Lock()
		chans := make([]*channelState, 0, len(sh.channels))
		for name, ch := range sh.channels {
			if strings.HasPrefix(name, prefix) && name > after {
				chans = append(chans, ch)
			}
		}
		sh.mu.Unlock()
		for _, ch := range chans {
			ch.mu.Lock()
			if !ch.closed && ch.initErr == nil && ch.initDone {
				out = append(out, ch.infoLocked())
			}
			ch.mu.Unlock()
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

// janitor closes idle channels, trims in-memory logs and enforces retention
// in the store, without holding any lock across store I/O.
func (e *Engine) janitor() {
	defer e.wg.Done()
	t := time.NewTicker(e.opts.JanitorInterval)
	defer t.Stop()
	var lastRetention time.Time
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
		}
		e.sweepChannels()
		if e.opts.Store != nil && e.now().Sub(lastRetention) >= e.retentionInterval() {
			lastRetention = e.now()
			e.enforceRetention()
		}
	}
}

func (e *Engine) retentionInterval() time.Duration {
	return min(max(e.opts.ResumeWindow/10, e.opts.JanitorInterval), time.Minute)
}

func (e *Engine) sweepChannels() {
	now := e.now()
	var closed []string
	for i := range e.table {
		sh := &e.table[i]
		sh.mu.Lock()
		for name, ch := range sh.channels {
			ch.mu.Lock()
			if !ch.initDone {
				ch.mu.Unlock()
				continue
			}
			ch.trimMemoryLocked(now)
			if ch.idleLocked(now) {
				ch.closed = true
				delete(sh.channels, name)
				e.active.Add(-1)
				closed = append(closed, name)
			}
			ch.mu.Unlock()
		}
		sh.mu.Unlock()
	}
	for _, name := range closed {
		e.emit(ChannelClosed, name, "")
	}
}

// enforceRetention deletes expired records from the store, a bounded number
// at a time so that publishes never wait long behind it.
func (e *Engine) enforceRetention() {
	type job struct {
		name   string
		cutoff int64
	}
	var jobs []job
	now := e.now()
	err := e.opts.Store.Channels(func(name string, _ store.Meta) bool {
		d, forever := e.retention(e.rules(name))
		if !forever {
			jobs = append(jobs, job{name: name, cutoff: now.Add(-d).UnixMilli()})
		}
		return true
	})
	if err != nil {
		e.log.Error("retention: listing channels", "err", err)
		return
	}
	for _, j := range jobs {
		for {
			select {
			case <-e.stop:
				return
			default:
			}
			n, err := e.opts.Store.TrimBefore(j.name, j.cutoff, 10000)
			if err != nil {
				e.log.Error("retention: trimming channel", "channel", j.name, "err", err)
				break
			}
			e.metrics.retentionDeleted.Add(float64(n))
			if n < 10000 {
				break
			}
		}
	}
}
