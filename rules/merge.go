package rules

// Merge folds src's trait state into dst, as if dst had also seen every
// event src saw: identity resolution, when an anonymous visitor (src)
// turns out to be a known customer (dst). Counts and sums add, bucket by
// bucket; min and max combine; distinct values unite (keeping the latest
// bucket each was seen in); most_frequent tallies add; first keeps the
// earlier value and last the later one (on equal times dst's stays);
// profile attributes dst already has win, the others are copied. Windows
// are pruned at now. src is not modified. It returns the traits that
// changed, as Apply does.
//
// With the same events and no ties in time, Merge(dst, src) gives the same
// trait values as applying all of them to one state (tested), except where
// a per-bucket bound (distinct values per bucket, per trait) was reached.
func (rs *RuleSet) Merge(dst, src *State, now int64) Touched {
	dst.changed()
	var touched Touched
	for i, t := range rs.traits {
		st := src.get(i)
		if st.empty() {
			continue
		}
		dt := dst.slot(i)
		touched |= traitBit(i)
		switch t.agg {
		case aggFirst, aggLast:
			sx, dx := st.rx(), dt.rx()
			if !sx.has {
				continue
			}
			if !dx.has || (t.agg == aggFirst && sx.at < dx.at) || (t.agg == aggLast && sx.at > dx.at) {
				dx = dt.ext()
				dx.has, dx.at, dx.num, dx.str = true, sx.at, sx.num, sx.str
			}
		case aggDistinct:
			for _, sv := range st.rx().seen {
				dt.see(sv.v, sv.last)
			}
		default:
			for j := range st.buckets {
				sb := &st.buckets[j]
				var b *bucket
				if t.Window > 0 {
					b = dt.findBucket(sb.start)
				} else {
					if len(dt.buckets) == 0 {
						dt.buckets = append(dt.buckets, bucket{})
					}
					b = &dt.buckets[0]
				}
				if t.agg == aggMostFrequent {
					for _, v := range sb.values() {
						dt.countVal(b, v.v, v.n)
					}
					continue
				}
				if sb.n == 0 {
					continue
				}
				b.addAgg(t.agg, sb.n, sb.val)
			}
		}
		dt.prune(dst, t, now)
	}
	for _, a := range src.attrs {
		if _, ok := dst.Attr(a.Name); !ok {
			dst.setAttr(a)
		}
	}
	return touched
}
