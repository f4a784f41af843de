package cri

import (
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// A pod's sandbox and its containers are named exactly as the kubelet
// labelled them; the infra container is skipped; a container without the
// kubelet's labels takes its pod from its sandbox and its name from its
// metadata.
func TestNamesFromListing(t *testing.T) {
	f := checkoutPod()
	f.add(&runtimeapi.Container{Id: plainID, PodSandboxId: sandboxID, Metadata: &runtimeapi.ContainerMetadata{Name: "sidecar"}})
	path := socketIn(t)
	serve(t, f, path)
	c, log := startCache(t, Options{Endpoint: "unix://" + path})
	waitFor(t, "the first listing", func() bool { return c.Stats().Listings == 1 })

	for _, tc := range []struct {
		id   string
		want Names
		ok   bool
	}{
		{apiID, api, true},
		{sandboxID, checkout, true},
		{plainID, Names{Pod: checkout.Pod, PodNamespace: "payments", PodUID: podUID, Container: "sidecar"}, true},
		{infraID, Names{}, false},
	} {
		if got, ok := c.Lookup(tc.id); got != tc.want || ok != tc.ok {
			t.Errorf("Lookup(%.12s) = %+v, %v; want %+v, %v", tc.id, got, ok, tc.want, tc.ok)
		}
	}
	if got, ok := c.PodByUID(podUID); got != checkout || !ok {
		t.Errorf("PodByUID = %+v, %v; want %+v, true", got, ok, checkout)
	}
	want := Stats{State: StateUp, Listings: 1, Answered: 4, Misses: 1, IDs: 3, Pods: 1}
	if got := c.Stats(); got != want {
		t.Errorf("Stats = %+v; want %+v", got, want)
	}
	if log.String() != "" {
		t.Errorf("logged %q for a healthy CRI", log.String())
	}
}

// A container started after the first listing: its first lookup misses and
// asks for a listing, which comes no sooner than Refresh after the last
// one and names it.
func TestContainerAfterFirstListing(t *testing.T) {
	f := checkoutPod()
	path := socketIn(t)
	serve(t, f, path)
	const refresh = 50 * time.Millisecond
	c, _ := startCache(t, Options{Endpoint: path, Refresh: refresh})
	waitFor(t, "the first listing", func() bool { return c.Stats().Listings == 1 })

	late := Names{Pod: checkout.Pod, PodNamespace: "payments", PodUID: podUID, Container: "worker"}
	f.add(&runtimeapi.Container{Id: lateID, PodSandboxId: sandboxID, Labels: kubeletLabels(late)})
	if got, ok := c.Lookup(lateID); ok {
		t.Fatalf("Lookup before the second listing = %+v, true", got)
	}
	waitFor(t, "the listing the miss asked for", func() bool { return c.Stats().Listings == 2 })
	if got, ok := c.Lookup(lateID); got != late || !ok {
		t.Errorf("Lookup after the miss = %+v, %v; want %+v, true", got, ok, late)
	}
	at := f.listings()
	if len(at) != 2 || at[1].Sub(at[0]) < refresh {
		t.Errorf("listings at %v: want 2, at least %v apart", at, refresh)
	}
	want := Stats{State: StateUp, Listings: 2, Answered: 1, Misses: 1, IDs: 3, Pods: 1}
	if got := c.Stats(); got != want {
		t.Errorf("Stats = %+v; want %+v", got, want)
	}
}

// A CRI that answers after the Timeout: while its call hangs, lookups
// return (known names, misses) without waiting for it; the failure is
// counted and logged once; once it answers again, one line says so.
func TestSlowCRI(t *testing.T) {
	f := checkoutPod()
	path := socketIn(t)
	serve(t, f, path)
	endpoint := "unix://" + path
	c, log := startCache(t, Options{Endpoint: endpoint, Timeout: 100 * time.Millisecond, Refresh: time.Millisecond})
	waitFor(t, "the first listing", func() bool { return c.Stats().Listings == 1 })

	s := f.stallAll()
	c.Lookup(lateID) // asks for the listing that stalls
	<-s.entered
	for range 1000 {
		if got, ok := c.Lookup(apiID); got != api || !ok {
			t.Fatalf("Lookup(api) while the CRI hangs = %+v, %v", got, ok)
		}
		if _, ok := c.Lookup(strayID); ok {
			t.Fatal("Lookup(stray) answered")
		}
	}
	select {
	case <-s.left:
		t.Fatal("the stalled call ended before the lookups returned: they were not shown not to wait")
	default:
	}
	waitFor(t, "the timeout", func() bool { return c.Stats().Failures >= 1 })
	wantLog := "twtrace: CRI " + endpoint + " unavailable: listing pod sandboxes: no answer within 100ms; pod names fall back to ids\n"
	if log.String() != wantLog {
		t.Errorf("log = %q; want %q", log.String(), wantLog)
	}
	if got := c.Stats().State; got != StateDown {
		t.Errorf("State = %v; want down", got)
	}
	if got, ok := c.Lookup(apiID); got != api || !ok {
		t.Errorf("Lookup(api) after the failure = %+v, %v; want the names known before", got, ok)
	}

	late := Names{Pod: checkout.Pod, PodNamespace: "payments", PodUID: podUID, Container: "worker"}
	f.add(&runtimeapi.Container{Id: lateID, PodSandboxId: sandboxID, Labels: kubeletLabels(late)})
	close(s.release)
	waitFor(t, "the CRI back", func() bool { _, ok := c.Lookup(lateID); return ok })
	wantLog += "twtrace: CRI " + endpoint + " is back; pods are named again\n"
	if log.String() != wantLog {
		t.Errorf("log = %q; want %q", log.String(), wantLog)
	}
	if got := c.Stats().State; got != StateUp {
		t.Errorf("State = %v; want up", got)
	}
}

// A CRI that goes away mid-run (its socket gone): lookups keep answering
// what was known, each listing tried fails and is counted, one line is
// logged for the outage; a CRI back on the socket is noticed at the next
// miss, and names what started meanwhile.
func TestCRIGoesAway(t *testing.T) {
	f := checkoutPod()
	path := socketIn(t)
	stop := serve(t, f, path)
	c, log := startCache(t, Options{Endpoint: path, Refresh: time.Millisecond})
	waitFor(t, "the first listing", func() bool { return c.Stats().Listings == 1 })

	stop()
	for failures := uint64(1); failures <= 3; failures++ {
		c.Lookup(lateID)
		waitFor(t, "a failed listing", func() bool { return c.Stats().Failures == failures })
		if got, ok := c.Lookup(apiID); got != api || !ok {
			t.Fatalf("Lookup(api) with the CRI gone = %+v, %v", got, ok)
		}
	}
	wantLog := "twtrace: CRI " + path + " unavailable: no socket at " + path + "; pod names fall back to ids\n"
	if log.String() != wantLog {
		t.Errorf("log = %q;\nwant %q", log.String(), wantLog)
	}

	late := Names{Pod: checkout.Pod, PodNamespace: "payments", PodUID: podUID, Container: "worker"}
	f.add(&runtimeapi.Container{Id: lateID, PodSandboxId: sandboxID, Labels: kubeletLabels(late)})
	serve(t, f, path)
	c.Lookup(lateID)
	waitFor(t, "the CRI back", func() bool { return c.Stats().Listings == 2 })
	if got, ok := c.Lookup(lateID); got != late || !ok {
		t.Errorf("Lookup(late) = %+v, %v; want %+v, true", got, ok, late)
	}
	wantLog += "twtrace: CRI " + path + " is back; pods are named again\n"
	if log.String() != wantLog {
		t.Errorf("log = %q; want %q", log.String(), wantLog)
	}
	if got := c.Stats(); got.State != StateUp || got.Failures != 3 {
		t.Errorf("Stats = %+v; want up after 3 failures", got)
	}
}

// The CRI stopping while a listing is in flight fails that listing, not
// the caller.
func TestCRIGoesAwayMidCall(t *testing.T) {
	f := checkoutPod()
	path := socketIn(t)
	stop := serve(t, f, path)
	endpoint := "unix://" + path
	c, log := startCache(t, Options{Endpoint: endpoint, Refresh: time.Millisecond})
	waitFor(t, "the first listing", func() bool { return c.Stats().Listings == 1 })

	s := f.stallAll()
	c.Lookup(lateID)
	<-s.entered
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }() // Stop waits for the stalled handler
	waitFor(t, "the failed listing", func() bool { return c.Stats().Failures == 1 })
	if got, ok := c.Lookup(apiID); got != api || !ok {
		t.Errorf("Lookup(api) = %+v, %v; want the names known before", got, ok)
	}
	close(s.release)
	<-stopped
	line := log.String()
	if !strings.HasPrefix(line, "twtrace: CRI "+endpoint+" unavailable: ") ||
		!strings.HasSuffix(line, "; pod names fall back to ids\n") || strings.Count(line, "\n") != 1 {
		t.Errorf("log = %q; want one unavailable line", line)
	}
}

// An endpoint that is no unix socket is refused at once, in one line.
func TestBadEndpoint(t *testing.T) {
	c, log := startCache(t, Options{Endpoint: "tcp://10.0.0.1:10010"})
	waitFor(t, "the refusal", func() bool { return c.Stats().Failures == 1 })
	want := "twtrace: CRI endpoint \"tcp://10.0.0.1:10010\": endpoint \"tcp://10.0.0.1:10010\": only unix sockets are supported; pod names fall back to ids\n"
	if log.String() != want {
		t.Errorf("log = %q; want %q", log.String(), want)
	}
}
