// Package logging builds the slog logger every binary uses: readable text on
// stderr, with a --log-level flag (DEIS_LOG_LEVEL).
package logging
