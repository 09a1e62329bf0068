package balancer

import (
	"fmt"
	"testing"
)

func BenchmarkPick(b *testing.B) {
	for _, policy := range Policies {
		for _, n := range []int{2, 8, 64} {
			b.Run(fmt.Sprintf("%s/n=%d", policy, n), func(b *testing.B) {
				bal, _ := New[*target](policy)
				addAll(bal, newTargets(n))
				b.ReportAllocs()
				for b.Loop() {
					bal.Pick()
				}
			})
		}
	}
}

// BenchmarkPickUnavailable picks while some members cannot take
// connections, as after failed handoffs.
func BenchmarkPickUnavailable(b *testing.B) {
	for _, policy := range Policies {
		b.Run(fmt.Sprintf("%s/n=8", policy), func(b *testing.B) {
			bal, _ := New[*target](policy)
			ts := newTargets(8)
			addAll(bal, ts)
			setOff(ts, ts[:2]...)
			b.ReportAllocs()
			for b.Loop() {
				bal.Pick()
			}
		})
	}
}

func BenchmarkPickParallel(b *testing.B) {
	for _, policy := range Policies {
		for _, n := range []int{8, 64} {
			b.Run(fmt.Sprintf("%s/n=%d", policy, n), func(b *testing.B) {
				bal, _ := New[*target](policy)
				addAll(bal, newTargets(n))
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						bal.Pick()
					}
				})
			})
		}
	}
}
