// Package eventtest holds the rules and events segd's tests share.
package eventtest

import (
	"time"

	"github.com/segd/segd/schemas"
)

// Rules is a small rule set with windows, a time-dependent segment and a
// requires_consent one.
const Rules = `version: 3
traits:
  orders_30d: count(purchase) over 30d
  spend_90d: sum(purchase.amount) over 90d
  last_order_at: last(purchase.ts)
  email_clicks_14d: count(engagement where channel == "email" and action == "click") over 14d
segments:
  buyer:
    description: ordered in the last 30 days
    when: "orders_30d >= 1"
  vip:
    when: "spend_90d >= 1000"
  lapsed:
    when: "last_order_at is not null and since(last_order_at) > 60d"
  clicker:
    requires_consent: true
    when: "email_clicks_14d >= 1"
`

// Time parses an RFC 3339 time into Unix ms; it panics on a bad literal.
func Time(s string) int64 {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t.UnixMilli()
}

// FormatTime formats Unix ms as RFC 3339 in UTC.
func FormatTime(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano) }

// Purchase is a purchase event of one item over the web, in GBP.
func Purchase(id, customer, at string, amount float64) schemas.Event {
	return schemas.Event{Type: schemas.EventPurchase, EventID: id, CustomerID: customer, Time: Time(at), Amount: amount, Channel: "web", Currency: "GBP", Quantity: 1}
}

// Profile is a profile event setting attrs.
func Profile(id, customer, at string, attrs ...schemas.Attribute) schemas.Event {
	return schemas.Event{Type: schemas.EventProfile, EventID: id, CustomerID: customer, Time: Time(at), Attributes: attrs}
}
