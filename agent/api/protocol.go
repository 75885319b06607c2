package api

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"
)

// LogLine is one line of a container's output, as GET /logs streams them:
// one JSON object per line.
type LogLine struct {
	// Time is when Docker received the line.
	Time time.Time `json:"time"`
	// Container is the container's spec name (hello.v3.web.1), or its
	// Docker name when it has none.
	Container string `json:"container"`
	Node      string `json:"node"`
	// Stream is "stdout" or "stderr".
	Stream string `json:"stream"`
	Line   string `json:"line"`
	// Release is the container's release, set on the lines of retired
	// containers.
	Release int `json:"release,omitempty"`
	// Retired is set on the lines of a container the agent has removed
	// (retired by a rollout, scaled down, or replaced after it exited),
	// kept in a bounded buffer per formation.
	Retired bool `json:"retired,omitempty"`
	// Mark, set only on an object of its own, is MarkLive: with follow=1,
	// the backlog ends there and the lines after it are new.
	Mark string `json:"mark,omitempty"`
}

// MarkLive is LogLine.Mark after the backlog of a followed log.
const MarkLive = "live"

// RunRequest is the JSON body of POST /run.
type RunRequest struct {
	// Command is a shell command line, run like a Procfile command.
	Command string `json:"command"`
	// Env is set on top of the release's config.
	Env map[string]string `json:"env,omitempty"`
}

// UpgradeProtocol is the protocol a POST /run switches to (Upgrade header).
const UpgradeProtocol = "deis-run"

// Frame types of the deis-run protocol, server to client: each frame is
// one type byte, a 4-byte big-endian payload length and the payload. The
// client sends its stdin as raw bytes, then half-closes the connection.
const (
	FrameStdout byte = 1
	FrameStderr byte = 2
	// FrameExit carries the exit status in decimal; it is the last frame.
	FrameExit byte = 3
)

// maxFrame bounds the payload a client accepts in one frame.
const maxFrame = 1 << 20

// frameWriter writes frames to w; it is safe for concurrent use.
type frameWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (f *frameWriter) write(typ byte, p []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for {
		n := min(len(p), maxFrame)
		frame := make([]byte, 5+n)
		frame[0] = typ
		binary.BigEndian.PutUint32(frame[1:5], uint32(n))
		copy(frame[5:], p[:n])
		if _, err := f.w.Write(frame); err != nil {
			return err
		}
		if p = p[n:]; len(p) == 0 {
			return nil
		}
	}
}

// stream is an io.Writer sending frames of one type.
type stream struct {
	f   *frameWriter
	typ byte
}

func (s stream) Write(p []byte) (int, error) {
	if err := s.f.write(s.typ, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// readFrames copies stdout and stderr frames from r to their writers until
// the exit frame, and returns the exit status.
func readFrames(r io.Reader, stdout, stderr io.Writer) (int, error) {
	var hdr [5]byte
	buf := make([]byte, 32<<10)
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return 0, errors.New("the connection ended before the command's exit status")
			}
			return 0, err
		}
		n := binary.BigEndian.Uint32(hdr[1:])
		if n > maxFrame {
			return 0, fmt.Errorf("frame of %d bytes is too long", n)
		}
		if int(n) > len(buf) {
			buf = make([]byte, n)
		}
		p := buf[:n]
		if _, err := io.ReadFull(r, p); err != nil {
			return 0, fmt.Errorf("read a frame: %w", err)
		}
		switch hdr[0] {
		case FrameStdout:
			if _, err := stdout.Write(p); err != nil {
				return 0, err
			}
		case FrameStderr:
			if _, err := stderr.Write(p); err != nil {
				return 0, err
			}
		case FrameExit:
			code, err := strconv.Atoi(string(p))
			if err != nil {
				return 0, fmt.Errorf("bad exit status %q", p)
			}
			return code, nil
		default:
			return 0, fmt.Errorf("unknown frame type %d", hdr[0])
		}
	}
}
