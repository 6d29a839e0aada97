package twilio

import (
	"strings"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/pricing"
)

// The Twilio catalogue: Programmable Messaging and Voice on
// api.twilio.com/2010-04-01, every call Keybrake forwards and how it is
// priced. A path that is not here does not exist (403 unknown_operation).
//
// Paths are matched without their format extension: Messages, Messages.json
// and Messages.xml are one operation (Twilio answers the same resource in
// XML or JSON). The account itself (which answers its auth_token) and its
// API and signing keys are forbidden: either hands the agent a credential
// that bypasses Keybrake.
//
// Built-in prices (the pricing file overrides them by operation name):
// SMS and MMS to the US and Canada, voice to the US and Canada; every other
// destination is refused until priced, because an unknown destination can
// cost twenty times a US one.
func newCatalog(v *Vendor) (*keybrake.Catalog, error) {
	const (
		free      = keybrake.ModelFree
		body      = keybrake.ModelBody
		bounded   = keybrake.ModelBounded
		fixed     = keybrake.ModelFixed
		forbidden = keybrake.ModelForbidden
	)
	const acct = "/2010-04-01/Accounts/*"
	read := "a read: free"
	msgs := &messagePricer{fx: v.fx, SMS: pricing.Countries("US", defaultSMSNorthAmerica, "CA", defaultSMSNorthAmerica),
		MMS: pricing.Countries("US", defaultMMSNorthAmerica, "CA", defaultMMSNorthAmerica)}
	vc := defaultVoice()
	ops := []*keybrake.Operation{
		op("messages.create", "POST "+acct+"/Messages", body,
			"SMS: segments × the destination's SMS price; MMS: the destination's MMS price; settled from Twilio's price when it states one", msgs),
		op("messages.list", "GET "+acct+"/Messages", free, read, nil),
		op("messages.fetch", "GET "+acct+"/Messages/*", free, read, nil),
		op("messages.update", "POST "+acct+"/Messages/*", free, "redacting a body or canceling a scheduled message: free (nothing else is accepted)", messageUpdate{}),
		op("messages.delete", "DELETE "+acct+"/Messages/*", free, "deletes the record: free", nil),
		op("messages.media.list", "GET "+acct+"/Messages/*/Media", free, read, nil),
		op("messages.media.fetch", "GET "+acct+"/Messages/*/Media/*", free, read, nil),

		op("calls.create", "POST "+acct+"/Calls", bounded,
			"per-minute rate of every leg (the destination, a <Dial> number) × the call's TimeLimit, which Keybrake sets from what it reserved when the request names none", &callPricer{v: vc}),
		op("calls.list", "GET "+acct+"/Calls", free, read, nil),
		op("calls.fetch", "GET "+acct+"/Calls/*", free, read, nil),
		op("calls.update", "POST "+acct+"/Calls/*", free, "ending a call (Status=completed or canceled): free; redirecting it to new TwiML is refused", statusOnly{"completed", "canceled"}),
		op("calls.delete", "DELETE "+acct+"/Calls/*", free, "deletes the record: free", nil),

		op("conferences.list", "GET "+acct+"/Conferences", free, read, nil),
		op("conferences.fetch", "GET "+acct+"/Conferences/*", free, read, nil),
		op("conferences.update", "POST "+acct+"/Conferences/*", free, "ending a conference (Status=completed): free; anything else is refused", statusOnly{"completed"}),
		op("conferences.participants.create", "POST "+acct+"/Conferences/*/Participants", bounded,
			"a participant is an outbound call: the destination's per-minute rate plus the conference fee × its TimeLimit, set by Keybrake when the request names none", &callPricer{v: vc, participant: true}),
		op("conferences.participants.list", "GET "+acct+"/Conferences/*/Participants", free, read, nil),
		op("conferences.participants.fetch", "GET "+acct+"/Conferences/*/Participants/*", free, read, nil),
		op("conferences.participants.delete", "DELETE "+acct+"/Conferences/*/Participants/*", free, "removes a participant: free", nil),

		op("incoming_phone_numbers.create", "POST "+acct+"/IncomingPhoneNumbers", fixed, "buys a phone number (monthly fees): no built-in price", nil),
		op("incoming_phone_numbers.local.create", "POST "+acct+"/IncomingPhoneNumbers/Local", fixed, "buys a local number (monthly fees): no built-in price", nil),
		op("incoming_phone_numbers.mobile.create", "POST "+acct+"/IncomingPhoneNumbers/Mobile", fixed, "buys a mobile number (monthly fees): no built-in price", nil),
		op("incoming_phone_numbers.toll_free.create", "POST "+acct+"/IncomingPhoneNumbers/TollFree", fixed, "buys a toll-free number (monthly fees): no built-in price", nil),
		op("incoming_phone_numbers.list", "GET "+acct+"/IncomingPhoneNumbers", free, read, nil),
		op("incoming_phone_numbers.fetch", "GET "+acct+"/IncomingPhoneNumbers/*", free, read, nil),
		op("incoming_phone_numbers.delete", "DELETE "+acct+"/IncomingPhoneNumbers/*", free, "releases a number: free", nil),
		op("available_phone_numbers.list", "GET "+acct+"/AvailablePhoneNumbers", free, read, nil),
		op("available_phone_numbers.fetch", "GET "+acct+"/AvailablePhoneNumbers/*", free, read, nil),
		op("available_phone_numbers.search", "GET "+acct+"/AvailablePhoneNumbers/*/*", free, read, nil),
		op("usage.records.list", "GET "+acct+"/Usage/Records", free, read, nil),
		op("usage.records.by_period", "GET "+acct+"/Usage/Records/*", free, read, nil),
		op("balance.fetch", "GET "+acct+"/Balance", free, read, nil),

		op("accounts.list", "GET /2010-04-01/Accounts", forbidden, "answers every account with its auth_token", nil),
		op("accounts.create", "POST /2010-04-01/Accounts", forbidden, "creates a subaccount and answers its auth_token", nil),
		op("accounts.fetch", "GET "+acct, forbidden, "answers the account's auth_token", nil),
		op("accounts.update", "POST "+acct, forbidden, "changes the account (and answers its auth_token)", nil),
		op("keys.list", "GET "+acct+"/Keys", forbidden, "lists the account's API keys", nil),
		op("keys.create", "POST "+acct+"/Keys", forbidden, "mints an API key that calls Twilio directly, bypassing Keybrake", nil),
		op("keys.fetch", "GET "+acct+"/Keys/*", forbidden, "reads an API key", nil),
		op("keys.update", "POST "+acct+"/Keys/*", forbidden, "changes an API key", nil),
		op("keys.delete", "DELETE "+acct+"/Keys/*", forbidden, "deletes an API key", nil),
		op("signing_keys.list", "GET "+acct+"/SigningKeys", forbidden, "lists the account's signing keys", nil),
		op("signing_keys.create", "POST "+acct+"/SigningKeys", forbidden, "mints a signing key (a credential)", nil),
		op("signing_keys.fetch", "GET "+acct+"/SigningKeys/*", forbidden, "reads a signing key", nil),
		op("signing_keys.update", "POST "+acct+"/SigningKeys/*", forbidden, "changes a signing key", nil),
		op("signing_keys.delete", "DELETE "+acct+"/SigningKeys/*", forbidden, "deletes a signing key", nil),
		op("sip.credential_lists.credentials.create", "POST "+acct+"/SIP/CredentialLists/*/Credentials", forbidden, "mints SIP credentials that place calls outside Keybrake", nil),
	}
	return keybrake.NewCatalog("twilio", normalize, ops)
}

// normalize drops a format extension from the last path segment: Twilio
// serves one resource as Messages, Messages.json and Messages.xml.
func normalize(path string) string {
	i := strings.LastIndexByte(path, '/')
	last := path[i+1:]
	for _, ext := range []string{".json", ".xml"} {
		if len(last) > len(ext) && strings.HasSuffix(last, ext) {
			return path[:len(path)-len(ext)]
		}
	}
	return path
}

func op(name, route string, model keybrake.PriceModel, note string, p keybrake.Pricer) *keybrake.Operation {
	method, path, _ := strings.Cut(route, " ")
	return &keybrake.Operation{Vendor: "twilio", Name: name, Method: method, Pattern: keybrake.MustParsePattern(path),
		Model: model, Note: note, Pricer: p}
}

// Built-in defaults. Vendor prices compiled into a binary go stale, so each
// one is rounded up to the dearest ordinary case: a reservation may
// over-count (and settles from the vendor's answer where it can), it must
// not under-count.
const (
	// US and Canada long-code SMS: Twilio's $0.0083 per segment plus the
	// highest US carrier pass-through fee ($0.0062), rounded up.
	defaultSMSNorthAmerica = "0.015"
	// US and Canada MMS: Twilio's $0.022 per message plus carrier fees,
	// rounded up.
	defaultMMSNorthAmerica = "0.04"
	// US and Canada outbound voice: $0.014 per minute, rounded up.
	defaultVoiceNorthAmerica = "0.015"
	// Call recording: $0.0025 per minute.
	defaultRecordingPerMinute = "0.0025"
	// Answering-machine detection: $0.0075 per call.
	defaultAMDPerCall = "0.0075"
	// Conference participants: $0.0018 per participant minute, rounded up.
	defaultConferencePerMinute = "0.002"
	// A call that names no TimeLimit runs at most this long, and less if
	// the key's budget is smaller.
	defaultTimeLimit = time.Hour
)
