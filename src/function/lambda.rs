//! A function that is an unmodified Lambda handler: its runtime runs as local
//! instances that Switchyard starts and serves over the Lambda Runtime API
//! (`switchyard-lambda-host`).

use bytes::Bytes;
use switchyard_lambda_host::{LambdaHost, LambdaSpec, Request};
use tokio_util::sync::CancellationToken;

use super::{Invocation, InvokeError, region};
use crate::config::LambdaFunctionConfig;

#[derive(Clone)]
pub struct LambdaFunction {
    host: LambdaHost,
}

impl LambdaFunction {
    pub fn new(name: &str, arn: &str, config: &LambdaFunctionConfig, concurrency: usize) -> Self {
        let mut spec = LambdaSpec::new(name, config.command.clone());
        spec.handler = config.handler.clone();
        spec.dir = config.dir.clone();
        spec.env = config.env.clone();
        spec.memory_mb = (config.memory >> 20) as u64;
        spec.timeout = config.timeout;
        spec.concurrency = concurrency;
        spec.idle_timeout = config.idle_timeout;
        spec.region = region();
        spec.arn = arn.to_string();
        Self { host: LambdaHost::new(spec, CancellationToken::new()) }
    }

    /// The result, and the invocation's log tail (START to REPORT, 4 KB).
    pub async fn invoke(&self, invocation: &Invocation) -> (Result<Bytes, InvokeError>, Option<String>) {
        let request = Request {
            request_id: invocation.request_id.clone(),
            payload: invocation.payload.clone(),
            client_context: invocation.client_context.clone(),
            trace_id: None,
        };
        match self.host.invoke(request).await {
            Ok(response) => {
                let tail = Some(response.log_tail.clone());
                let result = match &response.function_error {
                    None => Ok(response.payload),
                    Some(_) => Err(InvokeError::Function {
                        error_type: response.error_type.clone().unwrap_or_else(|| "Unhandled".to_string()),
                        message: response.error_message().unwrap_or_default(),
                        payload: Some(response.payload),
                    }),
                };
                (result, tail)
            }
            // The runtime could not be started, or Switchyard is stopping:
            // the function did not run.
            Err(error) => (Err(InvokeError::Unreachable(error.to_string())), None),
        }
    }

    /// Stops every instance and waits for them.
    pub async fn shutdown(&self) {
        self.host.shutdown().await;
    }
}
