package agentload

import (
	"context"
	"log/slog"
)

// warnHandler is a slog.Handler shared by every agent of a fleet: it
// reports warnings and errors (with the reason of a disconnection or
// refusal, when there is one) and drops the rest, so that thousands of
// agents log nothing but leave a summary.
type warnHandler struct{ r Reporter }

func (w *warnHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (w *warnHandler) Handle(_ context.Context, r slog.Record) error {
	key := r.Message
	r.Attrs(func(a slog.Attr) bool {
		// Why a connection ended or was refused: the kinds to tell apart.
		if a.Key == "reason" || a.Key == "gateway_says" {
			key += " (" + a.Key + ": " + a.Value.String() + ")"
		}
		return true
	})
	w.r.Warned(key)
	return nil
}

func (w *warnHandler) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnHandler) WithGroup(string) slog.Handler      { return w }
