package main

import (
	"fmt"
	"io"
	"strings"
)

// cpioWriter writes the "newc" cpio format (SVR4 without checksums), the
// one the kernel unpacks as an initramfs: per entry a 110-byte ASCII
// header, the NUL-terminated name padded to 4 bytes, then the data padded
// to 4 bytes; a "TRAILER!!!" entry ends the archive.
type cpioWriter struct {
	w   io.Writer
	off int64  // bytes written so far, for the padding
	ino uint32 // the next inode number; every entry gets its own
	err error
}

// Mode bits of the file types in an entry's mode.
const (
	cpioDir     = 0o040000
	cpioFile    = 0o100000
	cpioSymlink = 0o120000
	cpioChar    = 0o020000
)

// cpioEntry is one entry's header fields that vary.
type cpioEntry struct {
	name         string // path inside the archive, without a leading "/"
	mode         uint32 // type and permission bits
	mtime        int64
	size         int64
	rmajor, rmin uint32 // device number of a character device
}

func newCPIOWriter(w io.Writer) *cpioWriter { return &cpioWriter{w: w, ino: 1} }

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.off += int64(n)
	c.err = err
}

func (c *cpioWriter) pad() {
	if r := c.off % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

func (c *cpioWriter) header(e cpioEntry) {
	name := strings.TrimPrefix(e.name, "/")
	if name == "" {
		name = "."
	}
	nlink := 1
	if e.mode&0o170000 == cpioDir {
		nlink = 2
	}
	h := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		c.ino, e.mode, 0, 0, nlink, uint32(e.mtime), uint32(e.size), 0, 0, e.rmajor, e.rmin, len(name)+1, 0)
	c.ino++
	c.write([]byte(h))
	c.write(append([]byte(name), 0))
	c.pad()
}

// Dir adds a directory; its parents must be added first.
func (c *cpioWriter) Dir(name string, perm uint32) error {
	c.header(cpioEntry{name: name, mode: cpioDir | perm&0o7777})
	return c.err
}

// File adds a regular file of size bytes read from r.
func (c *cpioWriter) File(name string, perm uint32, mtime, size int64, r io.Reader) error {
	if size > 1<<32-1 {
		return fmt.Errorf("cpio: %s: %d bytes is too large for newc", name, size)
	}
	c.header(cpioEntry{name: name, mode: cpioFile | perm&0o7777, mtime: mtime, size: size})
	if c.err != nil {
		return c.err
	}
	n, err := io.CopyN(c.w, r, size)
	c.off += n
	if err != nil {
		c.err = fmt.Errorf("cpio: %s: %w", name, err)
		return c.err
	}
	c.pad()
	return c.err
}

// Bytes adds a regular file holding data.
func (c *cpioWriter) Bytes(name string, perm uint32, data []byte) error {
	return c.File(name, perm, 0, int64(len(data)), strings.NewReader(string(data)))
}

// Symlink adds a symbolic link to target.
func (c *cpioWriter) Symlink(name, target string) error {
	c.header(cpioEntry{name: name, mode: cpioSymlink | 0o777, size: int64(len(target))})
	c.write([]byte(target))
	c.pad()
	return c.err
}

// Char adds a character device node.
func (c *cpioWriter) Char(name string, perm, major, minor uint32) error {
	c.header(cpioEntry{name: name, mode: cpioChar | perm&0o7777, rmajor: major, rmin: minor})
	return c.err
}

// Close writes the trailer. It does not close the underlying writer.
func (c *cpioWriter) Close() error {
	c.header(cpioEntry{name: "TRAILER!!!"})
	return c.err
}
