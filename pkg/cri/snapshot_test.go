package cri

import (
	"fmt"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

var t0 = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

func listingOf(f *fakeCRI) listing { return listing{f.sandboxes, f.containers} }

// A removed container keeps its names for retainGone after the first
// listing that missed it (its last records still arrive), then loses them.
func TestRemovedContainerKept(t *testing.T) {
	s := (&snapshot{}).next(listingOf(checkoutPod()), nil, t0)
	empty := listing{}
	for _, tc := range []struct {
		after time.Duration
		ok    bool
	}{
		{0, true}, // the first listing without it
		{time.Minute, true},
		{retainGone - time.Second, true},
		{retainGone, false},
	} {
		s = s.next(empty, nil, t0.Add(tc.after))
		if r, ok := s.ids[apiID]; ok != tc.ok || ok && r.names != api {
			t.Errorf("%v after removal: api = %+v, %v; want kept %v", tc.after, r.names, ok, tc.ok)
		}
		if _, ok := s.pods[podUID]; ok != tc.ok {
			t.Errorf("%v after removal: pod kept %v; want %v", tc.after, ok, tc.ok)
		}
	}
}

// At most maxGone removed ids are kept, the most recently removed ones.
func TestRemovedContainersBounded(t *testing.T) {
	s := &snapshot{ids: map[string]record{}}
	for i := range maxGone + 10 {
		s.ids[fmt.Sprintf("%064x", i)] = record{names: api, gone: t0.Add(time.Duration(i) * time.Millisecond)}
	}
	s = s.next(listing{}, nil, t0.Add(time.Minute))
	if len(s.ids) != maxGone {
		t.Fatalf("kept %d removed ids; want %d", len(s.ids), maxGone)
	}
	if _, ok := s.ids[fmt.Sprintf("%064x", 9)]; ok {
		t.Error("kept an id among the 10 removed first")
	}
	if _, ok := s.ids[fmt.Sprintf("%064x", maxGone+9)]; !ok {
		t.Error("dropped the id removed last")
	}
}

// An id a listing after its miss did not hold is not asked for again for
// unknownFor: a stream of another runtime's containers must not list the
// node once per Refresh.
func TestUnknownNotAskedAgain(t *testing.T) {
	c := New(Options{Endpoint: "/nonexistent"})
	at := t0
	c.now = func() time.Time { return at }
	if _, ok := c.Lookup(strayID); ok {
		t.Fatal("stray answered")
	}
	if len(c.wake) != 1 || len(c.asked) != 1 {
		t.Fatalf("a first miss: wake %d, asked %d; want 1, 1", len(c.wake), len(c.asked))
	}
	<-c.wake
	c.snap.Store(c.snap.Load().next(listingOf(checkoutPod()), c.asked, at))
	c.asked = map[askKey]struct{}{}

	c.Lookup(strayID)
	if len(c.wake) != 0 || len(c.asked) != 0 {
		t.Errorf("a miss of a known-unknown id: wake %d, asked %d; want 0, 0", len(c.wake), len(c.asked))
	}
	if _, ok := c.PodByUID(strayID); ok || len(c.wake) != 1 {
		t.Errorf("the same string as a pod uid: wake %d; want asked for (1)", len(c.wake))
	}
	at = at.Add(unknownFor)
	<-c.wake
	c.Lookup(strayID)
	if len(c.wake) != 1 {
		t.Errorf("a miss %v later: wake %d; want asked again (1)", unknownFor, len(c.wake))
	}
	want := Stats{Misses: 4, IDs: 2, Pods: 1}
	if got := c.Stats(); got != want {
		t.Errorf("Stats = %+v; want %+v", got, want)
	}
}

// Two sandboxes of one pod uid (one recreated after its pause died): the
// ready one names the pod, whatever the order of the listing.
func TestPodByUIDPrefersReady(t *testing.T) {
	dead := &runtimeapi.PodSandbox{Id: "dead", State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY, CreatedAt: 2,
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "old-name", Namespace: "payments", Uid: podUID}}
	ready := &runtimeapi.PodSandbox{Id: sandboxID, State: runtimeapi.PodSandboxState_SANDBOX_READY, CreatedAt: 1,
		Metadata: &runtimeapi.PodSandboxMetadata{Name: checkout.Pod, Namespace: "payments", Uid: podUID}}
	for _, order := range [][]*runtimeapi.PodSandbox{{dead, ready}, {ready, dead}} {
		s := (&snapshot{}).next(listing{sandboxes: order}, nil, t0)
		if got := s.pods[podUID].names; got != checkout {
			t.Errorf("pod = %+v; want %+v", got, checkout)
		}
	}
}

// A cached lookup costs no allocation (issue 15: ≤ 100 ns, 0 allocs).
func TestLookupAllocs(t *testing.T) {
	c := New(Options{})
	c.snap.Store((&snapshot{}).next(listingOf(checkoutPod()), nil, t0))
	if n := testing.AllocsPerRun(1000, func() { c.Lookup(apiID) }); n != 0 {
		t.Errorf("Lookup allocates %v times", n)
	}
	if n := testing.AllocsPerRun(1000, func() { c.PodByUID(podUID) }); n != 0 {
		t.Errorf("PodByUID allocates %v times", n)
	}
}

func BenchmarkLookup(b *testing.B) {
	c := New(Options{})
	f := checkoutPod()
	for i := range 500 { // a full node: 110 pods of a few containers
		f.add(&runtimeapi.Container{Id: fmt.Sprintf("%064x", i), PodSandboxId: sandboxID, Labels: kubeletLabels(api)})
	}
	c.snap.Store((&snapshot{}).next(listingOf(f), nil, t0))
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := c.Lookup(apiID); !ok {
				b.Fatal("miss")
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, ok := c.Lookup(apiID); !ok {
					b.Fatal("miss")
				}
			}
		})
	})
}
