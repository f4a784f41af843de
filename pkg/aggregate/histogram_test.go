package aggregate

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestBucketsTileTheRange(t *testing.T) {
	var next uint64 // the smallest value not yet covered
	for i := range NumBuckets {
		lo, hi := BucketBounds(i)
		if lo != next || hi < lo {
			t.Fatalf("bucket %d is [%d, %d], want it to start at %d", i, lo, hi, next)
		}
		for _, v := range []uint64{lo, lo + (hi-lo)/2, hi} {
			if got := BucketOf(v); got != i {
				t.Fatalf("BucketOf(%d) = %d, want %d", v, got, i)
			}
		}
		// The width bound the error bound rests on.
		if w := hi - lo + 1; lo < 8 && w != 1 || w > lo/4 && lo >= 8 {
			t.Fatalf("bucket %d [%d, %d] is wider than a quarter of its start", i, lo, hi)
		}
		next = hi + 1
	}
	if next != 0 { // wrapped around: the last bucket ends at MaxUint64
		t.Fatalf("buckets end at %d, want MaxUint64", next-1)
	}
}

func TestBucketFigures(t *testing.T) {
	for _, c := range []struct {
		v      uint64
		bucket int
		lo, hi uint64
	}{
		{0, 0, 0, 0},
		{3, 3, 3, 3},
		{7, 7, 7, 7},
		{8, 8, 8, 9},
		{9, 8, 8, 9},
		{15, 11, 14, 15},
		{1000, 35, 896, 1023},
		{1024, 36, 1024, 1279},
		{math.MaxUint64, NumBuckets - 1, 7 << 61, math.MaxUint64},
	} {
		if got := BucketOf(c.v); got != c.bucket {
			t.Errorf("BucketOf(%d) = %d, want %d", c.v, got, c.bucket)
		}
		if lo, hi := BucketBounds(c.bucket); lo != c.lo || hi != c.hi {
			t.Errorf("BucketBounds(%d) = [%d, %d], want [%d, %d]", c.bucket, lo, hi, c.lo, c.hi)
		}
	}
}

func TestQuantileExactFigures(t *testing.T) {
	var h Histogram
	if _, ok := h.Quantile(0.5); ok {
		t.Fatal("empty histogram has a median")
	}
	// 1..10: the median by nearest rank is the 5th value, p90 the 9th.
	for v := uint64(1); v <= 10; v++ {
		h.Add(v)
	}
	for _, c := range []struct {
		q    float64
		want uint64
	}{
		{0, 1}, {0.5, 5}, {0.9, 9}, // 5, 9 exact; 9 is in [8, 9]: midpoint 9
		{1, 11}, // 10 is in [10, 11]: midpoint 11
	} {
		if got, ok := h.Quantile(c.q); !ok || got != c.want {
			t.Errorf("Quantile(%v) = %d, %v; want %d", c.q, got, ok, c.want)
		}
	}
	if h.Count() != 10 {
		t.Errorf("Count = %d, want 10", h.Count())
	}

	// 99 values of 1000 and one of 10^6: median 1000 is in [896, 1023].
	var g Histogram
	for range 99 {
		g.Add(1000)
	}
	g.Add(1_000_000)
	if got, _ := g.Quantile(0.5); got != 960 {
		t.Errorf("median = %d, want 960 (midpoint of [896, 1023])", got)
	}
	if got, _ := g.Quantile(1); got != 983_040 { // [917504, 1048575]
		t.Errorf("max = %d, want 983040", got)
	}
}

// TestQuantileErrorBound checks the documented bound against the true
// nearest-rank quantile of samples from several distributions.
func TestQuantileErrorBound(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	dists := map[string]func() uint64{
		"log-uniform": func() uint64 { return uint64(math.Exp2(rng.Float64() * 63)) },
		"uniform-ms":  func() uint64 { return rng.Uint64N(1e9) },
		"small":       func() uint64 { return rng.Uint64N(40) },
		"full":        rng.Uint64,
		"bimodal": func() uint64 {
			if rng.IntN(2) == 0 {
				return 50_000 + rng.Uint64N(1000)
			}
			return 60e9 + rng.Uint64N(1e9)
		},
	}
	for name, draw := range dists {
		for _, n := range []int{1, 2, 3, 10, 101, 1000, 5000} {
			var h Histogram
			vals := make([]uint64, n)
			for i := range vals {
				vals[i] = draw()
				h.Add(vals[i])
			}
			slices.Sort(vals)
			for _, q := range []float64{0, 0.01, 0.25, 0.5, 0.9, 0.99, 1} {
				truth := vals[rank(q, uint64(n))-1]
				got, _ := h.Quantile(q)
				if BucketOf(got) != BucketOf(truth) {
					t.Errorf("%s n=%d q=%v: estimate %d not in the bucket of %d", name, n, q, got, truth)
				}
				diff := max(got, truth) - min(got, truth)
				if diff > truth/8 {
					t.Errorf("%s n=%d q=%v: estimate %d is %d from %d, more than 1/8", name, n, q, got, diff, truth)
				}
			}
		}
	}
}

func TestRank(t *testing.T) {
	for _, c := range []struct {
		q    float64
		n    uint64
		want uint64
	}{
		{0.5, 10, 5}, {0.9, 10, 9}, {0.5, 11, 6}, {0.9, 100, 90}, {0.99, 100, 99},
		{0, 7, 1}, {1, 7, 7}, {-1, 7, 1}, {2, 7, 7}, {math.NaN(), 7, 1}, {0.5, 1, 1},
	} {
		if got := rank(c.q, c.n); got != c.want {
			t.Errorf("rank(%v, %d) = %d, want %d", c.q, c.n, got, c.want)
		}
	}
}
