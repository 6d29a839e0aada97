// Command issue-vault-key is the Step Functions Task state's Lambda function
// (runtime provided.al2023, handler "bootstrap"). See
// integrations/stepfunctions/README.md.
package main

import (
	"log"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/keybrake/keybrake/integrations/stepfunctions"
)

func main() {
	cfg, err := stepfunctions.ConfigFromEnv()
	if err != nil {
		log.Fatalf("issue-vault-key: %v", err)
	}
	lambda.Start(stepfunctions.New(cfg).IssueVaultKey)
}
