package sticky

// Pick maps key to one of slots by rendezvous (highest random weight)
// hashing: each slot scores hash(key, slot) and the highest wins. A slot
// added or removed moves only the keys it wins or won, about 1/N of them,
// and the answer depends only on the set, not on its order. false if
// slots is empty.
func Pick(key string, slots []int) (int, bool) {
	best, bestScore, ok := 0, uint64(0), false
	kh := hashString(key)
	for _, s := range slots {
		if sc := Score(kh, s); !ok || sc > bestScore {
			best, bestScore, ok = s, sc, true
		}
	}
	return best, ok
}

// Score is slot's weight for a key whose hashString is kh.
func Score(kh uint64, slot int) uint64 {
	return mix(kh ^ mix(uint64(slot)+0x9e3779b97f4a7c15))
}

// hashString is 64-bit FNV-1a.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// HashKey is the hash Score takes.
func HashKey(key string) uint64 { return hashString(key) }

// mix is splitmix64's finalizer: every input bit flips about half the
// output bits, which FNV alone does not do for short keys.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
