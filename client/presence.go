package client

import (
	"context"
	"encoding/json"
	"sync"
	"time"
)

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// Presence is a channel's presence set: who is there, with what data.
type Presence struct {
	ch *Channel

	mu      sync.Mutex
	entered *string // data this client entered with, to enter again after a reconnect
	subs    map[int]func(PresenceMember)
	nextSub int
	syncs   []chan *serverFrame
}

// Presence returns the channel's presence.
func (ch *Channel) Presence() *Presence { return ch.presence }

// Enter enters this client (Options.ClientID is required) with data. After
// a reconnect that could not resume the connection, the SDK enters again.
func (p *Presence) Enter(ctx context.Context, data string) error {
	if err := p.op(ctx, "enter", data); err != nil {
		return err
	}
	p.mu.Lock()
	p.entered = &data
	p.mu.Unlock()
	return nil
}

// Update changes this client's data (entering if needed).
func (p *Presence) Update(ctx context.Context, data string) error {
	if err := p.op(ctx, "update", data); err != nil {
		return err
	}
	p.mu.Lock()
	p.entered = &data
	p.mu.Unlock()
	return nil
}

// Leave removes this client from the set.
func (p *Presence) Leave(ctx context.Context) error {
	p.mu.Lock()
	p.entered = nil
	p.mu.Unlock()
	return p.op(ctx, "leave", "")
}

func (p *Presence) op(ctx context.Context, action, data string) error {
	pr := map[string]any{"action": action}
	if data != "" {
		pr["data"] = data
	}
	_, err := p.ch.c.submit(ctx, map[string]any{"action": "presence", "channel": p.ch.name, "presence": pr})
	return err
}

// reenter enters again after a new (not resumed) connection, whose
// members the server no longer has.
func (p *Presence) reenter(l *link, resumed bool) {
	if resumed {
		return
	}
	p.mu.Lock()
	data := p.entered
	p.mu.Unlock()
	if data == nil {
		return
	}
	c := p.ch.c
	c.wg.Add(1) // from the connect loop, itself counted: never after Close's Wait
	go func() {
		defer c.wg.Done()
		ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
		defer cancel()
		if err := p.op(ctx, "enter", *data); err != nil {
			p.ch.c.log.Warn("entering presence again after reconnecting", "channel", p.ch.name, "err", err)
		}
	}()
}

// Get returns the current members, reading every page of the server's
// presence sync.
func (p *Presence) Get(ctx context.Context) ([]PresenceMember, error) {
	var all []PresenceMember
	cursor := ""
	for {
		l := p.ch.c.currentLink()
		if l == nil {
			if err := p.ch.c.Connect(ctx); err != nil {
				return nil, err
			}
			continue
		}
		w := make(chan *serverFrame, 1)
		p.mu.Lock()
		p.syncs = append(p.syncs, w)
		p.mu.Unlock()
		f := map[string]any{"action": "sync", "channel": p.ch.name, "limit": 1000}
		if cursor != "" {
			f["cursor"] = cursor
		}
		if err := l.send(f); err != nil {
			return nil, err
		}
		select {
		case page := <-w:
			if page.Error != nil {
				return nil, page.Error
			}
			all = append(all, page.Presence...)
			if page.Cursor == "" {
				return all, nil
			}
			cursor = page.Cursor
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-p.ch.c.ctx.Done():
			return nil, ErrClosed
		}
	}
}

// Subscribe calls fn for every presence event of the channel (attaching
// it with presence events). fn must not block.
func (p *Presence) Subscribe(ctx context.Context, fn func(PresenceMember)) (unsubscribe func(), err error) {
	p.mu.Lock()
	id := p.nextSub
	p.nextSub++
	p.subs[id] = fn
	p.mu.Unlock()
	unsubscribe = func() {
		p.mu.Lock()
		delete(p.subs, id)
		p.mu.Unlock()
	}
	if err := p.ch.Attach(ctx, WithPresence()); err != nil {
		unsubscribe()
		return nil, err
	}
	return unsubscribe, nil
}

func (ch *Channel) presenceEvents(members []PresenceMember) {
	p := ch.presence
	p.mu.Lock()
	fns := make([]func(PresenceMember), 0, len(p.subs))
	for _, fn := range p.subs {
		fns = append(fns, fn)
	}
	p.mu.Unlock()
	for _, m := range members {
		for _, fn := range fns {
			fn(m)
		}
	}
}

func (ch *Channel) syncPage(f *serverFrame) {
	p := ch.presence
	p.mu.Lock()
	if len(p.syncs) == 0 {
		p.mu.Unlock()
		return
	}
	w := p.syncs[0]
	p.syncs = p.syncs[1:]
	p.mu.Unlock()
	w <- f
}
