// Switchyard example: a Node.js Lambda handler, unchanged from what would run
// on AWS, served through the aws-lambda-ric runtime interface client.
//
// Event {"name": "x"} answers {"message": "Hello, x!", ...}; {"fail": true}
// throws, which the runtime reports through the Runtime API's error endpoint.

console.log("node-hello: init");

export const handler = async (event, context) => {
  if (event && event.fail) {
    throw new TypeError("asked to fail");
  }
  console.log(`node-hello: greeting ${event && event.name}`);
  return {
    message: `Hello, ${(event && event.name) || "world"}!`,
    requestId: context.awsRequestId,
    functionName: context.functionName,
    memoryLimitInMB: context.memoryLimitInMB,
    pid: process.pid,
  };
};
