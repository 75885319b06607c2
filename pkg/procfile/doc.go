// Package procfile parses Procfiles: one "type: command" per line, blank
// lines and #-comments ignored. Parse returns an error naming the line that
// could not be parsed.
package procfile
