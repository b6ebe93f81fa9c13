package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/switchboardhq/switchboard/client"
)

// clientFlags are the connection flags every client command takes.
type clientFlags struct {
	server   string
	key      string
	token    string
	clientID string
	timeout  time.Duration
}

func (f *clientFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.server, "server", envOr("SWITCHBOARD_SERVER", "http://localhost:8080"), "server URL (env SWITCHBOARD_SERVER)")
	fl.StringVar(&f.key, "key", os.Getenv("SWITCHBOARD_KEY"), "API key name:secret (env SWITCHBOARD_KEY)")
	fl.StringVar(&f.token, "token", os.Getenv("SWITCHBOARD_TOKEN"), "token (env SWITCHBOARD_TOKEN)")
	fl.StringVar(&f.clientID, "client-id", "", "client id")
	if cmd.Name() != "sub" {
		fl.DurationVar(&f.timeout, "timeout", 30*time.Second, "give up after this long (the server unreachable, say)")
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func (f *clientFlags) client() (*client.Client, error) {
	if f.key != "" && f.token != "" {
		return nil, errors.New("give --key or --token, not both")
	}
	return client.New(client.Options{URL: f.server, Key: f.key, Token: f.token, ClientID: f.clientID})
}

// withClient runs fn with a client for the command's flags and a context
// that ends on Ctrl-C or SIGTERM, or after --timeout; the client is closed
// afterwards.
func (f *clientFlags) withClient(cmd *cobra.Command, fn func(ctx context.Context, c *client.Client) error) error {
	ctx, cancel := f.commandContext(cmd)
	defer cancel()
	c, err := f.client()
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(ctx, c)
}

// commandContext ends on Ctrl-C or SIGTERM, or after the command's
// --timeout.
func (f *clientFlags) commandContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	if f.timeout <= 0 {
		return ctx, stop
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	return ctx, func() { cancel(); stop() }
}

func newClientCommands(stdout io.Writer) []*cobra.Command {
	return []*cobra.Command{newPubCommand(stdout), newSubCommand(stdout), newHistoryCommand(stdout), newPresenceCommand(stdout), newTokenCommand(stdout)}
}

func newPubCommand(stdout io.Writer) *cobra.Command {
	var cf clientFlags
	var name, id string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "pub CHANNEL DATA",
		Short: "Publish a message and wait for the server's ack",
		Long: `Publish DATA on CHANNEL and print the acknowledgement as JSON.
With --json, DATA is a JSON value and is published as such.`,
		Args: cobra.ExactArgs(2),
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&name, "name", "", "event name")
	cmd.Flags().StringVar(&id, "id", "", "message id (makes retries idempotent; generated when empty)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "DATA is JSON")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		return cf.withClient(cmd, func(ctx context.Context, c *client.Client) error {
			m := &client.Message{ID: id, Name: name, Data: []byte(args[1])}
			if asJSON {
				if !json.Valid(m.Data) {
					return errors.New("--json: DATA is not valid JSON")
				}
				m.Encoding = "json"
			}
			res, err := c.Channel(args[0]).PublishMessages(ctx, m)
			if err != nil {
				return err
			}
			return writeJSONLine(stdout, map[string]any{
				"channel": args[0], "id": res[0].ID, "serial": res[0].Serial,
				"timestamp": res[0].Timestamp.UnixMilli(), "duplicate": res[0].Duplicate,
			})
		})
	}
	return cmd
}

func newSubCommand(stdout io.Writer) *cobra.Command {
	var cf clientFlags
	var rewind, from string
	var count int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "sub CHANNEL...",
		Short: "Subscribe to channels and print their messages",
		Long: `Subscribe to one or more channels and print each message as it arrives:
"channel name: data", or with --json one JSON object per line. The command
reconnects and resumes by itself; it ends after --count messages, or on
Ctrl-C.`,
		Args: cobra.MinimumNArgs(1),
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&rewind, "rewind", "", "first deliver the last N messages or those of the last DURATION (e.g. 10, 30s)")
	cmd.Flags().StringVar(&from, "from", "", "resume after this channel serial (one channel only)")
	cmd.Flags().IntVar(&count, "count", 0, "exit after this many messages (0: never)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per message and line")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if from != "" && len(args) > 1 {
			return errors.New("--from names a position on one channel; give one channel")
		}
		if count < 0 {
			return errors.New("--count must not be negative")
		}
		return cf.withClient(cmd, func(ctx context.Context, c *client.Client) error {
			msgs := make(chan *client.Message, 1024)
			for _, name := range args {
				var opts []client.Option
				if rewind != "" {
					opts = append(opts, client.WithRewind(rewind))
				}
				if from != "" {
					opts = append(opts, client.WithResumeFrom(from))
				}
				if _, err := c.Channel(name).Subscribe(ctx, func(m *client.Message) {
					select {
					case msgs <- m:
					case <-ctx.Done():
					}
				}, opts...); err != nil {
					return fmt.Errorf("subscribing to %s: %w", name, err)
				}
			}
			for n := 0; count == 0 || n < count; n++ {
				select {
				case m := <-msgs:
					if err := printMessage(stdout, m, asJSON); err != nil {
						return err
					}
				case <-ctx.Done():
					return nil
				}
			}
			return nil
		})
	}
	return cmd
}

func newHistoryCommand(stdout io.Writer) *cobra.Command {
	var cf clientFlags
	var limit int
	var direction string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "history CHANNEL",
		Short: "Print a channel's history",
		Args:  cobra.ExactArgs(1),
	}
	cf.register(cmd)
	cmd.Flags().IntVar(&limit, "limit", 100, "number of messages")
	cmd.Flags().StringVar(&direction, "direction", "backwards", "backwards (newest first) or forwards")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per message and line")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if direction != "backwards" && direction != "forwards" {
			return fmt.Errorf("--direction must be backwards or forwards, not %q", direction)
		}
		if limit < 1 {
			return errors.New("--limit must be at least 1")
		}
		return cf.withClient(cmd, func(ctx context.Context, c *client.Client) error {
			page, err := c.History(ctx, args[0], client.HistoryOptions{Limit: min(limit, 1000), Forwards: direction == "forwards"})
			for n := 0; err == nil; {
				for _, m := range page.Messages {
					if n == limit {
						return nil
					}
					if err := printMessage(stdout, m, asJSON); err != nil {
						return err
					}
					n++
				}
				if !page.HasNext() || n == limit {
					return nil
				}
				page, err = page.Next(ctx)
			}
			return err
		})
	}
	return cmd
}

func newPresenceCommand(stdout io.Writer) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "presence CHANNEL",
		Short: "Print a channel's presence members, one JSON object per line",
		Args:  cobra.ExactArgs(1),
	}
	cf.register(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		return cf.withClient(cmd, func(ctx context.Context, c *client.Client) error {
			members, err := c.PresenceMembers(ctx, args[0])
			if err != nil {
				return err
			}
			for _, m := range members {
				if err := writeJSONLine(stdout, m); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return cmd
}

func newTokenCommand(stdout io.Writer) *cobra.Command {
	var cf clientFlags
	var capability string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Issue a token with a subset of the key's capability",
		Long: `Issue a token signed by --key and print it as JSON. --capability maps channel
patterns to operations, e.g. '{"chat:*":["subscribe","history"]}'.`,
		Args: cobra.NoArgs,
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&capability, "capability", "", "capability JSON (default: the key's)")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "lifetime (default: the server's)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		req := client.TokenRequest{ClientID: cf.clientID, TTL: ttl}
		if capability != "" {
			if err := json.Unmarshal([]byte(capability), &req.Capability); err != nil {
				return fmt.Errorf("--capability: %w", err)
			}
		}
		return cf.withClient(cmd, func(ctx context.Context, c *client.Client) error {
			td, err := c.RequestToken(ctx, req)
			if err != nil {
				return err
			}
			return writeJSONLine(stdout, td)
		})
	}
	return cmd
}

// printMessage prints a message as "channel name: data" or as JSON.
func printMessage(w io.Writer, m *client.Message, asJSON bool) error {
	if !asJSON {
		data := string(m.Data)
		if !utf8.Valid(m.Data) {
			data = "base64:" + base64.StdEncoding.EncodeToString(m.Data)
		}
		label := m.Channel
		if m.Name != "" {
			label += " " + m.Name
		}
		_, err := fmt.Fprintf(w, "%s: %s\n", label, strings.TrimRight(data, "\n"))
		return err
	}
	out := map[string]any{"channel": m.Channel, "serial": m.Serial, "id": m.ID}
	if m.Name != "" {
		out["name"] = m.Name
	}
	switch {
	case m.Encoding == "json" && json.Valid(m.Data):
		out["data"] = json.RawMessage(m.Data)
		out["encoding"] = "json"
	case utf8.Valid(m.Data):
		out["data"] = string(m.Data)
		if m.Encoding != "" {
			out["encoding"] = m.Encoding
		}
	default:
		out["data"] = base64.StdEncoding.EncodeToString(m.Data)
		out["encoding"] = "base64"
	}
	if !m.Timestamp.IsZero() {
		out["timestamp"] = m.Timestamp.UnixMilli()
	}
	if m.ClientID != "" {
		out["clientId"] = m.ClientID
	}
	if m.ConnectionID != "" {
		out["connectionId"] = m.ConnectionID
	}
	if len(m.Extras) > 0 {
		out["extras"] = m.Extras
	}
	return writeJSONLine(w, out)
}

func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
