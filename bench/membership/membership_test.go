package membership

import "testing"

func TestDigestIgnoresOrderAndSeesContent(t *testing.T) {
	a := Digest([]string{Pair("c1", "vip"), Pair("c2", "buyer")})
	b := Digest([]string{Pair("c2", "buyer"), Pair("c1", "vip")})
	c := Digest([]string{Pair("c1", "vip"), Pair("c2", "vip")})
	if a != b {
		t.Fatal("order changed the digest")
	}
	if a == c {
		t.Fatal("different memberships gave the same digest")
	}
	// A customer id ending like a segment cannot fake another pair.
	if Digest([]string{Pair("c1x", "y")}) == Digest([]string{Pair("c1", "xy")}) {
		t.Fatal("pair boundary is ambiguous")
	}
}
