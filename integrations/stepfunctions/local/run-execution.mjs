// Runs one execution of a Step Functions definition on aws-local-stepfunctions
// and prints a JSON report on stdout. Driven by the Go tests.
//
//   node run-execution.mjs <config.json>
//
// config: {
//   "definitionFile": "../statemachine/billing.asl.json",
//   "input": {...},                      execution input
//   "executionArn": "arn:aws:states:...:execution:<machine>:<name>",
//   "retryIntervalOverrides": {"ChargeOne": 20}   optional, milliseconds
// }
//
// Task states are NOT overridden: the interpreter invokes each state's
// Resource through the AWS SDK's Lambda client, which the caller points at a
// local Lambda service with AWS_ENDPOINT_URL_LAMBDA. Function errors come
// back as Lambda reports them ({errorType, errorMessage}) and the
// interpreter names the state error after errorType, so Retry and Catch
// match exactly as on AWS.
//
// Report: {status: "SUCCEEDED"|"FAILED", output, error, cause,
//          states: [top-level state names entered, in order],
//          items: {index: {states: [...], output, retries: n, caught: [...], errors: [...]}}}
//
// The per-item outputs come from the event log: the definitions discard the
// Map's result array (ResultPath null) to keep the execution's state data
// under Step Functions' 256 KiB limit; Keybrake's audit log is the record.

// aws-local-stepfunctions 3.x calls Promise.withResolvers (Node >= 22).
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers() {
    let resolve;
    let reject;
    const promise = new this((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}

const { readFile } = await import('node:fs/promises');
const path = await import('node:path');
const { StateMachine } = await import('aws-local-stepfunctions');

const configPath = process.argv[2];
if (!configPath) {
  console.error('usage: node run-execution.mjs <config.json>');
  process.exit(2);
}
const config = JSON.parse(await readFile(configPath, 'utf8'));
const definition = JSON.parse(await readFile(path.resolve(path.dirname(configPath), config.definitionFile), 'utf8'));

const arn = config.executionArn;
const parts = arn.split(':');
const machineName = parts[6];
const executionName = parts[7];
const context = {
  Execution: {
    Id: arn,
    Name: executionName,
    Input: config.input,
    StartTime: new Date().toISOString(),
    RoleArn: `arn:aws:iam::${parts[4]}:role/keybrake-billing-sfn`,
  },
  StateMachine: {
    Id: `arn:aws:states:${parts[3]}:${parts[4]}:stateMachine:${machineName}`,
    Name: machineName,
  },
};

const machine = new StateMachine(definition);
const execution = machine.run(config.input, {
  context,
  overrides: { retryIntervalOverrides: config.retryIntervalOverrides ?? {} },
});

const states = [];
const items = {};
const item = (i) => (items[i] ??= { states: [], retries: 0, caught: [], errors: [] });
const logs = (async () => {
  for await (const ev of execution.eventLogs) {
    const inMap = typeof ev.index === 'number';
    switch (ev.type) {
      case 'StateEntered':
        if (inMap) item(ev.index).states.push(ev.state.name);
        else states.push(ev.state.name);
        break;
      case 'StateExited':
        // An iteration's result is the output of its last state.
        if (inMap) item(ev.index).output = ev.state.output;
        break;
      case 'StateRetried':
        if (inMap) item(ev.index).retries++;
        break;
      case 'StateCaught':
        if (inMap) item(ev.index).caught.push(ev.catch.catcher.ErrorEquals.join(','));
        break;
      case 'StateFailed':
        if (inMap) item(ev.index).errors.push(ev.Error);
        break;
      default:
    }
  }
})();

const report = { status: 'SUCCEEDED', states, items };
try {
  report.output = await execution.result;
} catch (err) {
  // The interpreter wraps the state error in an ExecutionError.
  const cause = err.cause ?? err;
  report.status = 'FAILED';
  report.error = cause.name;
  report.cause = cause.message;
}
await logs;
process.stdout.write(JSON.stringify(report) + '\n');
