package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// reports parses what the guest writes on the second serial port: the test
// binary's output, byte for byte, with /init's report lines among it. A
// report line starts with the token (random, so no test prints it) and
// ends with a newline:
//
//	TOKEN START <kernel release>   before the test binary runs
//	TOKEN EXIT <status>            after it exited
//	TOKEN FILE <path>              a file it wrote follows, base64 lines,
//	TOKEN END                      up to here
//	TOKEN DONE [<status>]          nothing follows; the guest powers off
//	                               (the exit status again, if there was one)
//
// It is an io.Writer: the bytes may be split anywhere, a token too.
type reports struct {
	token []byte
	out   io.Writer // where the test's output goes
	// accept says whether the test was asked to write path: only those
	// files are written on the host.
	accept func(path string) bool

	held   []byte // output that may be the start of a token
	inLine bool   // reading a report line (after its token)
	line   []byte
	file   string       // path of the file being received, if any
	data   bytes.Buffer // its base64 text
	err    error        // first failure to write output or a file

	release  string // from START
	exited   bool   // EXIT seen
	status   int
	done     bool     // DONE seen
	received []string // files written on the host
}

func newReports(token string, out io.Writer, accept func(string) bool) *reports {
	return &reports{token: []byte(token), out: out, accept: accept}
}

func (r *reports) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		if r.inLine {
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				r.line = append(r.line, b...)
				return n, nil
			}
			r.line = append(r.line, b[:i]...)
			b = b[i+1:]
			r.inLine = false
			r.handle(strings.TrimSpace(string(r.line)))
			r.line = r.line[:0]
			continue
		}
		if r.file != "" {
			// Base64 lines up to the END report (token at a line start).
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				r.line = append(r.line, b...)
				return n, nil
			}
			l := append(r.line, b[:i]...)
			b = b[i+1:]
			r.line = r.line[:0]
			if rest, ok := bytes.CutPrefix(l, r.token); ok {
				r.handle(strings.TrimSpace(string(rest)))
				continue
			}
			r.data.Write(bytes.TrimSpace(l))
			continue
		}
		data := append(r.held, b...)
		b = nil
		r.held = nil
		if i := bytes.Index(data, r.token); i >= 0 {
			r.output(data[:i])
			r.inLine = true
			b = data[i+len(r.token):]
			continue
		}
		k := partialSuffix(data, r.token)
		r.output(data[:len(data)-k])
		r.held = append([]byte(nil), data[len(data)-k:]...)
	}
	return n, nil
}

// partialSuffix is the length of the longest suffix of data that is a
// proper prefix of token.
func partialSuffix(data, token []byte) int {
	for k := min(len(token)-1, len(data)); k > 0; k-- {
		if bytes.HasPrefix(token, data[len(data)-k:]) {
			return k
		}
	}
	return 0
}

func (r *reports) output(b []byte) {
	if len(b) == 0 || r.err != nil {
		return
	}
	if _, err := r.out.Write(b); err != nil {
		r.err = err
	}
}

// Flush writes output held back as a possible token: at the end of the
// stream it was not one.
func (r *reports) Flush() {
	r.output(r.held)
	r.held = nil
}

func (r *reports) handle(line string) {
	verb, arg, _ := strings.Cut(line, " ")
	switch verb {
	case "START":
		r.release = arg
	case "EXIT":
		s, err := strconv.Atoi(arg)
		if err != nil {
			r.fail(fmt.Errorf("bad exit status %q from the guest", arg))
			return
		}
		r.exited, r.status = true, s
	case "FILE":
		r.file = arg
		r.data.Reset()
	case "END":
		r.saveFile()
	case "DONE":
		r.done = true
		// The exit status again: a serial port can drop bytes (seen once:
		// an EXIT line lost on 6.12 under TCG, DONE received).
		if s, err := strconv.Atoi(arg); err == nil && !r.exited {
			r.exited, r.status = true, s
			r.output([]byte("vmexec: the guest's EXIT report was lost; its DONE report carried the status\n"))
		}
	}
}

func (r *reports) saveFile() {
	path := r.file
	r.file = ""
	if !filepath.IsAbs(path) || r.accept == nil || !r.accept(path) {
		r.fail(fmt.Errorf("the guest sent %q, which the test was not asked to write", path))
		return
	}
	raw, err := base64.StdEncoding.DecodeString(r.data.String())
	if err != nil {
		r.fail(fmt.Errorf("copying %s back: %v", path, err))
		return
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		r.fail(err)
		return
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		r.fail(err)
		return
	}
	r.received = append(r.received, path)
}

func (r *reports) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}
