package testnet

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"runtime"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A one-entry io_uring that submits IORING_OP_CONNECT and waits for its
// completion: the client's connects then enter the kernel through
// io_uring's issue path instead of connect(2). x/sys/unix has the syscall
// numbers but no io_uring types; the layouts below are the kernel's uapi
// (include/uapi/linux/io_uring.h), stable since 5.1.

const (
	ioringOpConnect       = 16
	iosqeAsync            = 1 << 4
	ioringEnterGetevents  = 1
	ioringFeatSingleMmap  = 1
	ioringOffSQRing       = 0
	ioringOffCQRing       = 0x8000000
	ioringOffSQEs         = 0x10000000
	ioUringSQESize        = 64
	ioUringCQESize        = 16
	ioUringParamsSize     = 120
	ioUringParamsFeatures = 20 // offset of features
	ioUringParamsSQOff    = 40 // offset of sq_off
	ioUringParamsCQOff    = 80 // offset of cq_off
)

type uring struct {
	fd int
	// async sets IOSQE_ASYNC: the kernel issues each request from an
	// io-wq worker instead of inline in io_uring_enter.
	async        bool
	sqRing       []byte
	cqRing       []byte
	sqes         []byte
	sqHead       *uint32
	sqTail       *uint32
	sqMask       uint32
	sqArray      []uint32
	cqHead       *uint32
	cqTail       *uint32
	cqMask       uint32
	cqesOff      uint32
	singleMapped bool
}

func u32at(b []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }

// newUring sets up a ring of one submission entry.
func newUring() (*uring, error) {
	var p [ioUringParamsSize]byte
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&p[0])), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	le := binary.NativeEndian
	sq := func(i int) uint32 { return le.Uint32(p[ioUringParamsSQOff+4*i:]) }
	cq := func(i int) uint32 { return le.Uint32(p[ioUringParamsCQOff+4*i:]) }
	sqEntries, cqEntries := le.Uint32(p[0:]), le.Uint32(p[4:])
	features := le.Uint32(p[ioUringParamsFeatures:])
	// sq_off: head, tail, ring_mask, ring_entries, flags, dropped, array.
	// cq_off: head, tail, ring_mask, ring_entries, overflow, cqes.
	sqSize := sq(6) + sqEntries*4
	cqSize := cq(5) + cqEntries*ioUringCQESize
	r := &uring{fd: int(fd)}
	if features&ioringFeatSingleMmap != 0 {
		sqSize = max(sqSize, cqSize)
		r.singleMapped = true
	}
	var err error
	if r.sqRing, err = unix.Mmap(r.fd, ioringOffSQRing, int(sqSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		r.Close()
		return nil, fmt.Errorf("io_uring: mmap sq ring: %w", err)
	}
	r.cqRing = r.sqRing
	if !r.singleMapped {
		if r.cqRing, err = unix.Mmap(r.fd, ioringOffCQRing, int(cqSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
			r.Close()
			return nil, fmt.Errorf("io_uring: mmap cq ring: %w", err)
		}
	}
	if r.sqes, err = unix.Mmap(r.fd, ioringOffSQEs, int(sqEntries*ioUringSQESize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		r.Close()
		return nil, fmt.Errorf("io_uring: mmap sqes: %w", err)
	}
	r.sqHead, r.sqTail = u32at(r.sqRing, sq(0)), u32at(r.sqRing, sq(1))
	r.sqMask = *u32at(r.sqRing, sq(2))
	r.sqArray = unsafe.Slice(u32at(r.sqRing, sq(6)), sqEntries)
	r.cqHead, r.cqTail = u32at(r.cqRing, cq(0)), u32at(r.cqRing, cq(1))
	r.cqMask = *u32at(r.cqRing, cq(2))
	r.cqesOff = cq(5)
	return r, nil
}

func (r *uring) Close() {
	if r.sqes != nil {
		unix.Munmap(r.sqes)
	}
	if r.cqRing != nil && !r.singleMapped {
		unix.Munmap(r.cqRing)
	}
	if r.sqRing != nil {
		unix.Munmap(r.sqRing)
	}
	unix.Close(r.fd)
}

// rawSockaddr is the struct sockaddr_in or sockaddr_in6 of ap.
func rawSockaddr(ap netip.AddrPort) []byte {
	var b []byte
	if ap.Addr().Is4() {
		b = make([]byte, unix.SizeofSockaddrInet4)
		binary.NativeEndian.PutUint16(b, unix.AF_INET)
		a := ap.Addr().As4()
		copy(b[4:], a[:])
	} else {
		b = make([]byte, unix.SizeofSockaddrInet6)
		binary.NativeEndian.PutUint16(b, unix.AF_INET6)
		a := ap.Addr().As16()
		copy(b[8:], a[:])
	}
	binary.BigEndian.PutUint16(b[2:], ap.Port())
	return b
}

// connect submits one IORING_OP_CONNECT of fd to dest and waits for it:
// the errno the completion carries, or nil.
func (r *uring) connect(fd int, dest netip.AddrPort) error {
	sa := rawSockaddr(dest)
	tail := atomic.LoadUint32(r.sqTail)
	idx := tail & r.sqMask
	sqe := r.sqes[idx*ioUringSQESize : (idx+1)*ioUringSQESize]
	clear(sqe)
	le := binary.NativeEndian
	sqe[0] = ioringOpConnect
	if r.async {
		sqe[1] = iosqeAsync
	}
	le.PutUint32(sqe[4:], uint32(fd))
	le.PutUint64(sqe[8:], uint64(len(sa)))                          // off: addrlen
	le.PutUint64(sqe[16:], uint64(uintptr(unsafe.Pointer(&sa[0])))) // addr
	le.PutUint64(sqe[32:], uint64(tail)+1)                          // user_data
	r.sqArray[idx] = idx
	atomic.StoreUint32(r.sqTail, tail+1)
	for {
		_, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), 1, 1, ioringEnterGetevents, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return fmt.Errorf("io_uring_enter: %w", errno)
		}
		break
	}
	runtime.KeepAlive(sa)
	head := atomic.LoadUint32(r.cqHead)
	for head == atomic.LoadUint32(r.cqTail) {
		// Submitted with min_complete 1: a completion is there unless a
		// signal cut the wait short.
		if _, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), 0, 1, ioringEnterGetevents, 0, 0); errno != 0 && errno != unix.EINTR {
			return fmt.Errorf("io_uring_enter: %w", errno)
		}
	}
	cqe := r.cqRing[r.cqesOff+(head&r.cqMask)*ioUringCQESize:]
	res := int32(le.Uint32(cqe[8:]))
	atomic.StoreUint32(r.cqHead, head+1)
	if got := le.Uint64(cqe); got != uint64(tail)+1 {
		return fmt.Errorf("io_uring: completion for request %d, want %d", got, tail+1)
	}
	if res < 0 {
		return unix.Errno(-res)
	}
	return nil
}
