package logging

import (
	"log/slog"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
)

// Flag is the shared --log-level flag.
func Flag() cli.Flag {
	return &cli.StringFlag{Name: "log-level", EnvVars: []string{"DEIS_LOG_LEVEL"}, Value: "info", Usage: "debug, info, warn or error"}
}

// New returns a text logger at the level named by the flag, tagged with the
// component name.
func New(c *cli.Context, component string) *slog.Logger {
	var lvl slog.Level
	switch strings.ToLower(c.String("log-level")) {
	case "debug":
		lvl = slog.LevelDebug
	case "warn":
		lvl = slog.LevelWarn
	case "error":
		lvl = slog.LevelError
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})).With("component", component)
}
