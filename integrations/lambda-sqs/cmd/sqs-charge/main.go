// Command sqs-charge is an SQS-triggered Lambda function (runtime
// provided.al2023, handler "bootstrap") that turns each message
// {"customer","amount_cents","currency"} into one Stripe PaymentIntent
// through Keybrake, with one vault key per message. See
// integrations/lambda-sqs/README.md.
package main

import (
	"log"

	"github.com/aws/aws-lambda-go/lambda"

	lambdasqs "github.com/keybrake/keybrake/integrations/lambda-sqs"
)

func main() {
	cfg, err := lambdasqs.ConfigFromEnv()
	if err != nil {
		log.Fatalf("sqs-charge: %v", err)
	}
	lambda.Start(lambdasqs.New(cfg, nil).Handle)
}
