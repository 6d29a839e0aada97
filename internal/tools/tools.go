//go:build tools

// Package tools pins modules that tests, examples and integrations use, so
// go.mod holds them even while only build-tagged or test code imports them.
package tools

import (
	_ "github.com/aws/aws-lambda-go/lambda"
	_ "github.com/goccy/go-yaml"
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "github.com/resend/resend-go/v3"
	_ "github.com/stripe/stripe-go/v82"
	_ "github.com/twilio/twilio-go"
	_ "go.temporal.io/sdk/client"
)
