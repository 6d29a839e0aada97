// Command fn is a Lambda function for lambdalocal's tests: it echoes, fails
// with a typed error, panics, exits or overruns, as its input asks.
package main

import (
	"context"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

type input struct {
	Mode  string `json:"mode"`
	Value string `json:"value"`
}

// Boom is a typed error: aws-lambda-go reports errorType "Boom".
type Boom struct{ msg string }

func (b *Boom) Error() string { return b.msg }

func handle(ctx context.Context, in input) (map[string]any, error) {
	lc, _ := lambdacontext.FromContext(ctx)
	deadline, _ := ctx.Deadline()
	switch in.Mode {
	case "error":
		return nil, &Boom{msg: "boom: " + in.Value}
	case "panic":
		panic("kaboom")
	case "exit":
		os.Exit(3)
	case "sleep":
		select {
		case <-time.After(time.Minute):
		case <-ctx.Done():
		}
		time.Sleep(time.Minute)
	}
	return map[string]any{
		"value": in.Value, "request_id": lc.AwsRequestID, "arn": lc.InvokedFunctionArn,
		"function": lambdacontext.FunctionName, "pid": os.Getpid(), "has_deadline": !deadline.IsZero(),
		"env": os.Getenv("FN_ENV"),
	}, nil
}

func main() { lambda.Start(handle) }
