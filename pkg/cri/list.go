package cri

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// listing is what one round of CRI calls returned.
type listing struct {
	sandboxes  []*runtimeapi.PodSandbox
	containers []*runtimeapi.Container
}

// list asks the CRI for every pod sandbox and container, each call bounded
// by Timeout. A failed call drops the connection, so the next listing
// dials afresh instead of waiting out gRPC's reconnect backoff.
func (c *Cache) list(ctx context.Context, path string) (listing, error) {
	if c.conn == nil {
		conn, err := dial(path)
		if err != nil {
			return listing{}, err
		}
		c.conn = conn
	}
	rt := runtimeapi.NewRuntimeServiceClient(c.conn)
	var l listing
	err := c.call(ctx, func(ctx context.Context) error {
		r, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
		l.sandboxes = r.GetItems()
		return c.explain("listing pod sandboxes", err)
	})
	if err == nil {
		err = c.call(ctx, func(ctx context.Context) error {
			r, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
			l.containers = r.GetContainers()
			return c.explain("listing containers", err)
		})
	}
	if err != nil {
		c.hangUp()
		// Whatever gRPC saw first (a reset stream, a refused dial), a
		// missing socket is the cause worth a line.
		if _, serr := os.Stat(path); errors.Is(serr, fs.ErrNotExist) {
			err = fmt.Errorf("no socket at %s", path)
		}
	}
	return l, err
}

func (c *Cache) call(ctx context.Context, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	return f(ctx)
}

// explain words a failed call for the one line an outage gets: gRPC's
// own text for a timeout depends on which side gave up first.
func (c *Cache) explain(doing string, err error) error {
	if err == nil {
		return nil
	}
	st := status.Convert(err)
	if st.Code() == codes.DeadlineExceeded {
		return fmt.Errorf("%s: no answer within %v", doing, c.opts.Timeout)
	}
	return fmt.Errorf("%s: %v: %s", doing, st.Code(), st.Message())
}

// dial makes a client for the socket at path. grpc.NewClient connects on
// the first call; the dialer takes the path itself, so no character of it
// has to survive gRPC's target parsing.
func dial(path string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient("passthrough:///localhost",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessage)),
	)
	if err != nil {
		return nil, fmt.Errorf("making a client for %s: %w", path, err)
	}
	return conn, nil
}

func (c *Cache) hangUp() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// snapshot is immutable once published: Lookup reads it without a lock.
type snapshot struct {
	ids     map[string]record    // container and sandbox ids
	pods    map[string]record    // pod uids
	unknown map[askKey]time.Time // ids a listing did not hold: not asked for again until then
}

type record struct {
	names Names
	gone  time.Time // when a listing first missed it; zero while listed
}

// next builds the snapshot that follows s from a listing made at now:
// what the CRI listed, the removed ids s still keeps, and the asked ids the
// listing did not hold.
func (s *snapshot) next(l listing, asked map[askKey]struct{}, now time.Time) *snapshot {
	n := &snapshot{
		ids:     make(map[string]record, len(l.sandboxes)+len(l.containers)),
		pods:    make(map[string]record, len(l.sandboxes)),
		unknown: map[askKey]time.Time{},
	}
	// Several sandboxes can hold one pod uid (a sandbox recreated after
	// its pause died): the ready one, then the newest, names the pod.
	sandboxes := slices.Clone(l.sandboxes)
	slices.SortFunc(sandboxes, func(a, b *runtimeapi.PodSandbox) int {
		if ra, rb := a.GetState() == runtimeapi.PodSandboxState_SANDBOX_READY, b.GetState() == runtimeapi.PodSandboxState_SANDBOX_READY; ra != rb {
			if ra {
				return 1
			}
			return -1
		}
		return cmp.Compare(a.GetCreatedAt(), b.GetCreatedAt())
	})
	for _, sb := range sandboxes {
		if sb.GetId() == "" {
			continue
		}
		names := sandboxNames(sb)
		n.ids[sb.GetId()] = record{names: names}
		if names.PodUID != "" {
			n.pods[names.PodUID] = record{names: names} // the best sorts last
		}
	}
	for _, ctr := range l.containers {
		names, ok := containerNames(ctr, n.ids[ctr.GetPodSandboxId()].names)
		if ok && ctr.GetId() != "" {
			n.ids[ctr.GetId()] = record{names: names}
		}
	}
	keepGone(n.ids, s.ids, now)
	keepGone(n.pods, s.pods, now)
	for k, until := range s.unknown {
		if now.Before(until) {
			n.unknown[k] = until
		}
	}
	for k := range asked {
		if len(n.unknown) >= maxUnknown {
			break
		}
		names := n.ids
		if k.pod {
			names = n.pods
		}
		if _, ok := names[k.id]; !ok {
			n.unknown[k] = now.Add(unknownFor)
		}
	}
	return n
}

// keepGone carries into fresh the records of old that the listing no
// longer holds, for retainGone after it first missed them, the newest
// maxGone of them.
func keepGone(fresh, old map[string]record, now time.Time) {
	type goneRecord struct {
		id string
		record
	}
	var gone []goneRecord
	for id, r := range old {
		if _, listed := fresh[id]; listed {
			continue
		}
		if r.gone.IsZero() {
			r.gone = now
		}
		if now.Sub(r.gone) < retainGone {
			gone = append(gone, goneRecord{id, r})
		}
	}
	if len(gone) > maxGone {
		slices.SortFunc(gone, func(a, b goneRecord) int { return b.gone.Compare(a.gone) })
		gone = gone[:maxGone]
	}
	for _, g := range gone {
		fresh[g.id] = g.record
	}
}
