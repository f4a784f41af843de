package aggregate

import (
	"math"
	"math/bits"
)

// subBits is log2 of the number of buckets per power of two.
const subBits = 2

const (
	subBuckets = 1 << subBits
	// NumBuckets is the number of buckets in a Histogram: the values below
	// 4 get one each, then every power of two [2^e, 2^(e+1)) for e = 2..63
	// is split into 4 buckets of equal width 2^(e-2).
	NumBuckets = subBuckets + (64-subBits)*subBuckets
)

// Histogram counts uint64 values in NumBuckets log-linear buckets, like
// HdrHistogram with two significant bits: a bucket's width is at most a
// quarter of its smallest value, and values below 8 are counted exactly.
// The zero value is an empty histogram; it is 2 KiB and never allocates.
//
// Error bound: Quantile returns the midpoint of the bucket that holds the
// true quantile v, so the estimate is in the same bucket as v and differs
// from it by at most v/8 (12.5%), by nothing when v < 8.
type Histogram struct {
	n      uint64
	counts [NumBuckets]uint64
}

// BucketOf returns the index of the bucket that counts v.
func BucketOf(v uint64) int {
	if v < subBuckets {
		return int(v)
	}
	e := bits.Len64(v) - 1 // v is in [2^e, 2^(e+1)), e >= subBits
	m := int(v>>(e-subBits)) & (subBuckets - 1)
	return (e-subBits+1)*subBuckets + m
}

// BucketBounds returns the smallest and the largest value that bucket i
// counts (both inclusive). It panics if i is not in [0, NumBuckets).
func BucketBounds(i int) (lo, hi uint64) {
	if i < 0 || i >= NumBuckets {
		panic("aggregate: bucket index out of range")
	}
	if i < subBuckets {
		return uint64(i), uint64(i)
	}
	shift := i/subBuckets - 1 // log2 of the bucket's width
	lo = uint64(subBuckets+i%subBuckets) << shift
	return lo, lo + (1<<shift - 1)
}

// Add counts one value.
func (h *Histogram) Add(v uint64) {
	h.counts[BucketOf(v)]++
	h.n++
}

// Count is the number of values counted.
func (h *Histogram) Count() uint64 { return h.n }

// Quantile estimates the q-quantile (0 <= q <= 1) of the values counted,
// by the nearest-rank method: the true quantile is the ceil(q*n)-th smallest
// value (the smallest for q = 0). The estimate is the midpoint of the bucket
// holding that value; see Histogram for the error bound. ok is false when
// the histogram is empty.
func (h *Histogram) Quantile(q float64) (v uint64, ok bool) {
	if h.n == 0 {
		return 0, false
	}
	r := rank(q, h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= r {
			lo, hi := BucketBounds(i)
			return lo + (hi-lo+1)/2, true
		}
	}
	panic("aggregate: histogram count does not match its buckets")
}

// rank is the 1-based nearest rank of the q-quantile among n values.
func rank(q float64, n uint64) uint64 {
	if !(q > 0) { // also NaN
		return 1
	}
	if q >= 1 {
		return n
	}
	// q*n is computed in floating point; the small tolerance keeps e.g.
	// 0.9*10 = 9.000000000000002 from becoming rank 10.
	r := uint64(math.Ceil(q*float64(n) - 1e-9))
	return min(max(r, 1), n)
}
