package twilio

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/keybrake/keybrake"
)

// FinalCost fetches a message Keybrake forwarded and reads the price Twilio
// has filled in since (null at creation, a negative decimal minutes later).
// Only message and MMS sids (SM…, MM…) are looked up; calls keep their
// reserved maximum.
func (v *Vendor) FinalCost(ctx context.Context, hc *http.Client, objectID string) (keybrake.Micros, bool, error) {
	if len(objectID) != 34 || !(strings.HasPrefix(objectID, "SM") || strings.HasPrefix(objectID, "MM")) || !alnum(objectID) {
		return 0, false, fmt.Errorf("twilio: %q is not a message sid", objectID)
	}
	u := *v.base
	u.Path = v.base.Path + apiPrefix + "Accounts/" + v.sid + "/Messages/" + objectID + ".json"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return 0, false, err
	}
	req.SetBasicAuth(v.sid, v.token)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, false, fmt.Errorf("twilio: fetch message %s: %w", objectID, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, false, fmt.Errorf("twilio: read message %s: %w", objectID, err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, false, fmt.Errorf("twilio: fetch message %s: HTTP %d", objectID, resp.StatusCode)
	}
	var msg struct {
		Price     json.RawMessage `json:"price"`
		PriceUnit string          `json:"price_unit"`
	}
	if err := json.Unmarshal(body, &msg); err != nil {
		return 0, false, fmt.Errorf("twilio: message %s: %w", objectID, err)
	}
	cost, ok := v.ParsePrice(msg.Price, msg.PriceUnit)
	return cost, ok, nil
}
