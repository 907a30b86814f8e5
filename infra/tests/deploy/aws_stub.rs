//! An AWS-shaped HTTP endpoint on 127.0.0.1 for the real AWS CLI: it answers each
//! call `scripts/deploy` makes in that service's own protocol (query/XML for STS,
//! CloudFormation, RDS and EC2;
//! REST-JSON for Lambda), and the producer's `/readyz` and `/orders` for curl. The
//! CLI parses every argument and every answer as it would against AWS, so an
//! option it refuses or a `--query` that selects nothing fails the test.
//!
//! Every request is recorded (service, action, parameters) for the tests to assert
//! what the script asked. A call it does not know gets an error and is recorded as
//! `unknown`.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub(crate) const ACCOUNT: &str = "123456789012";
pub(crate) const REGION: &str = "eu-west-1";
pub(crate) const STACK: &str = "demo";
pub(crate) const PROXY: &str = "demo-proxy";
pub(crate) const CONSUMER_LOG_GROUP: &str = "/aws/lambda/demo-consumer";
pub(crate) const CONSUMER_FUNCTION: &str = "demo-consumer";
pub(crate) const PROVISION_FUNCTION: &str = "demo-provision";
pub(crate) const QUEUE_URL: &str = "https://sqs.eu-west-1.amazonaws.com/123456789012/demo-orders";
pub(crate) const SAM_MANAGED_STACK: &str = "aws-sam-cli-managed-default";
pub(crate) const SAM_BUCKET: &str = "aws-sam-cli-managed-default-samclisourcebucket-0example";
pub(crate) const CHANGE_SET: &str = "arn:aws:cloudformation:eu-west-1:123456789012:changeSet/samcli-deploy/00000000-0000-4000-8000-000000000003";

/// One request as the stub understood it.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    /// The SigV4 credential scope's service (`sts`, `lambda`, …), or `producer`
    /// for an unsigned request (curl).
    pub(crate) service: String,
    /// The API action (`DescribeStacks`), or `GET /readyz` for the producer.
    pub(crate) action: String,
    /// Query parameters, JSON members (as JSON text unless strings), or
    /// `FunctionName` and `Payload` for Lambda's Invoke, `body` for the producer.
    pub(crate) params: BTreeMap<String, String>,
}

impl Call {
    pub(crate) fn param(&self, key: &str) -> &str {
        self.params.get(key).map_or("", String::as_str)
    }
}

/// What the fake account answers; tests change a field to break one thing.
#[derive(Debug, Clone)]
pub(crate) struct Answers {
    /// RDS Proxy's target health (State, Reason, Description), one per call;
    /// the last one repeats. An empty Reason or Description is left out.
    pub(crate) proxy_target: VecDeque<(String, String, String)>,
    /// `/readyz`'s status, one per request; the last one repeats.
    pub(crate) readyz_status: VecDeque<u16>,
    pub(crate) orders_status: u16,
    /// Whether the consumer function, asked `{"lookup": …}`, finds the order
    /// stored, one per lookup; the last one repeats.
    pub(crate) consumer_stored: VecDeque<bool>,
    /// Lambda's X-Amz-Function-Error for the provision function (empty: none).
    pub(crate) provision_function_error: String,
    /// The stack's outputs; `ProducerUrl` is added as the stub's own address.
    pub(crate) outputs: Vec<(String, String)>,
    /// Whether STS accepts the caller's credentials.
    pub(crate) credentials_valid: bool,
    /// Lambda's AccountLimit: (ConcurrentExecutions, UnreservedConcurrentExecutions).
    pub(crate) account_concurrency: (u32, u32),
    /// The region's zones as this account sees them: (name, zone id).
    pub(crate) availability_zones: Vec<(String, String)>,
}

impl Default for Answers {
    fn default() -> Self {
        Self {
            proxy_target: VecDeque::from([("AVAILABLE".into(), String::new(), String::new())]),
            readyz_status: VecDeque::from([200]),
            orders_status: 202,
            consumer_stored: VecDeque::from([true]),
            provision_function_error: String::new(),
            outputs: vec![
                ("ProvisionFunctionName".into(), PROVISION_FUNCTION.into()),
                ("ConsumerFunctionName".into(), CONSUMER_FUNCTION.into()),
            ],
            credentials_valid: true,
            account_concurrency: (1000, 1000),
            availability_zones: ["a", "b", "c"]
                .iter()
                .enumerate()
                .map(|(n, zone)| (format!("{REGION}{zone}"), format!("euw1-az{}", n + 1)))
                .collect(),
        }
    }
}

struct Shared {
    answers: Mutex<Answers>,
    calls: Mutex<Vec<Call>>,
    stop: AtomicBool,
    addr: SocketAddr,
}

pub(crate) struct Stub {
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Stub {
    /// Listens on a free loopback port and answers until dropped.
    pub(crate) fn start(answers: Answers) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        let addr = listener.local_addr().expect("the stub's address");
        let shared = Arc::new(Shared {
            answers: Mutex::new(answers),
            calls: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            addr,
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let shared = Arc::clone(&shared);
                    std::thread::spawn(move || serve(&shared, stream));
                }
            })
        };
        Self {
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:<port>`, for AWS_ENDPOINT_URL and the producer's URL.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        self.shared.calls.lock().expect("calls").clone()
    }

    /// The calls of one service and action, in order.
    pub(crate) fn calls_of(&self, service: &str, action: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.service == service && c.action == action)
            .collect()
    }

    /// Every call, one per line, for assertion messages.
    pub(crate) fn log(&self) -> String {
        self.calls()
            .iter()
            .map(|c| format!("{} {} {:?}\n", c.service, c.action, c.params))
            .collect()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the acceptor so that it sees the flag.
        let _ = TcpStream::connect(self.shared.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

struct Request {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

struct Response {
    status: u16,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Response {
    fn new(status: u16, content_type: &'static str, body: String) -> Self {
        Self {
            status,
            content_type,
            headers: Vec::new(),
            body,
        }
    }
    fn xml(body: String) -> Self {
        Self::new(200, "text/xml", body)
    }
}

fn serve(shared: &Shared, stream: TcpStream) {
    // One request per connection: the answer says `Connection: close`.
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let Some(request) = read_request(&mut BufReader::new(stream), &mut writer) else {
        return;
    };
    let (call, response) = answer(shared, &request);
    shared.calls.lock().expect("calls").push(call);
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nx-amzn-RequestId: 00000000-0000-4000-8000-000000000000\r\nConnection: close\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = writer.write_all(head.as_bytes());
    let _ = writer.write_all(response.body.as_bytes());
    let _ = writer.flush();
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        404 => "Not Found",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn read_request(reader: &mut BufReader<TcpStream>, writer: &mut TcpStream) -> Option<Request> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = BTreeMap::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    if headers
        .get("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").ok()?;
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

/// The service of a SigV4-signed request: `Credential=AKID/date/region/SERVICE/aws4_request`.
fn signed_service(request: &Request) -> Option<String> {
    let authorization = request.headers.get("authorization")?;
    let credential = authorization.split("Credential=").nth(1)?;
    credential.split('/').nth(3).map(str::to_owned)
}

fn answer(shared: &Shared, request: &Request) -> (Call, Response) {
    let Some(service) = signed_service(request) else {
        return producer(shared, request);
    };
    let mut call = Call {
        service: service.clone(),
        action: String::new(),
        params: BTreeMap::new(),
    };
    let response = match service.as_str() {
        "sts" | "cloudformation" | "rds" | "ec2" => {
            let mut params = form(&String::from_utf8_lossy(&request.body));
            call.action = params.remove("Action").unwrap_or_default();
            params.remove("Version");
            call.params = params;
            query_answer(shared, &call)
        }
        "lambda" => lambda(shared, request, &mut call),
        "s3" => s3(request, &mut call),
        "sqs" => sqs(request, &mut call),
        _ => None,
    };
    let response = response.unwrap_or_else(|| {
        call.action = format!(
            "unknown: {} {} {}",
            call.action, request.method, request.path
        );
        // In the service's own error shape, so that the CLI reports it as an error.
        if matches!(service.as_str(), "sts" | "cloudformation" | "rds" | "ec2") {
            query_error("UnknownOperation", "the stub does not know this call")
        } else {
            Response::new(
                400,
                "application/json",
                r#"{"__type":"UnknownOperationException","message":"the stub does not know this call"}"#
                    .into(),
            )
        }
    });
    (call, response)
}

/// The next answer of a sequence: its first until only the last is left, which repeats.
fn next<T: Clone + Default>(queue: &mut VecDeque<T>) -> T {
    if queue.len() > 1 {
        queue.pop_front().unwrap_or_default()
    } else {
        queue.front().cloned().unwrap_or_default()
    }
}

fn producer(shared: &Shared, request: &Request) -> (Call, Response) {
    let mut answers = shared.answers.lock().expect("answers");
    let action = format!("{} {}", request.method, request.path);
    let mut params = BTreeMap::new();
    params.insert(
        "body".to_owned(),
        String::from_utf8_lossy(&request.body).into_owned(),
    );
    params.insert(
        "content-type".to_owned(),
        request
            .headers
            .get("content-type")
            .cloned()
            .unwrap_or_default(),
    );
    let response = match action.as_str() {
        "GET /readyz" => Response::new(
            next(&mut answers.readyz_status),
            "text/plain",
            "ready\n".into(),
        ),
        // The repository's catalogue, which the canary is priced by.
        "GET /catalogue" => Response::new(
            200,
            "application/json",
            include_str!("../../../producer/catalogue.json").into(),
        ),
        "POST /orders" => {
            let order_id = serde_json::from_slice::<serde_json::Value>(&request.body)
                .ok()
                .and_then(|v| {
                    v.get("order_id")
                        .and_then(|id| id.as_str())
                        .map(str::to_owned)
                })
                .unwrap_or_default();
            Response::new(
                answers.orders_status,
                "application/json",
                serde_json::json!({ "order_id": order_id, "message_id": "m-1" }).to_string(),
            )
        }
        _ => Response::new(404, "text/plain", "no such path\n".into()),
    };
    let call = Call {
        service: "producer".into(),
        action,
        params,
    };
    (call, response)
}

/// SQS's JSON protocol (`X-Amz-Target: AmazonSQS.<Action>`), SendMessage only:
/// <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessage.html>.
/// The CLI checks `MD5OfMessageBody` against the body it sent.
fn sqs(request: &Request, call: &mut Call) -> Option<Response> {
    use md5::{Digest, Md5};

    let action = request
        .headers
        .get("x-amz-target")?
        .strip_prefix("AmazonSQS.")?;
    call.action = action.to_owned();
    let body: serde_json::Value = serde_json::from_slice(&request.body).ok()?;
    for key in ["QueueUrl", "MessageBody"] {
        call.params
            .insert(key.into(), body[key].as_str().unwrap_or_default().into());
    }
    if action != "SendMessage" {
        return None;
    }
    let digest = Md5::digest(body["MessageBody"].as_str().unwrap_or_default().as_bytes());
    let md5: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    Some(Response::new(
        200,
        "application/x-amz-json-1.0",
        serde_json::json!({ "MessageId": "canary-message-1", "MD5OfMessageBody": md5 }).to_string(),
    ))
}

/// `application/x-www-form-urlencoded`, as botocore's query serializer writes it.
fn form(body: &str) -> BTreeMap<String, String> {
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], escaped) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 2;
            }
            (byte, _) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const REQUEST_ID: &str = "<ResponseMetadata><RequestId>00000000-0000-4000-8000-000000000000</RequestId></ResponseMetadata>";

/// An action's answer in the query protocol: `<ActionResponse><ActionResult>…`.
fn query_result(service: &str, action: &str, result: &str) -> Response {
    let namespace = match service {
        "sts" => "https://sts.amazonaws.com/doc/2011-06-15/",
        "rds" => "http://rds.amazonaws.com/doc/2014-10-31/",
        _ => "http://cloudformation.amazonaws.com/doc/2010-05-15/",
    };
    Response::xml(format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><{action}Response xmlns="{namespace}"><{action}Result>{result}</{action}Result>{REQUEST_ID}</{action}Response>"#
    ))
}

fn query_error(code: &str, message: &str) -> Response {
    Response::new(
        400,
        "text/xml",
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{}</Message></Error><RequestId>00000000-0000-4000-8000-000000000000</RequestId></ErrorResponse>"#,
            xml_escape(message)
        ),
    )
}

/// EC2's answer, in its own query protocol (no `…Result` element, a lower-case
/// `requestId`), as its API reference shows it
/// (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeAvailabilityZones.html>):
/// the zones named by `ZoneName.N`, or every zone.
fn describe_availability_zones(answers: &Answers, call: &Call) -> Response {
    let named: Vec<&str> = call
        .params
        .iter()
        .filter(|(key, _)| key.starts_with("ZoneName."))
        .map(|(_, value)| value.as_str())
        .collect();
    if let Some(unknown) = named
        .iter()
        .find(|name| !answers.availability_zones.iter().any(|(n, _)| n == *name))
    {
        return Response::new(
            400,
            "text/xml",
            format!(
                r#"<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>InvalidParameterValue</Code><Message>Invalid availability zone: [{}]</Message></Error></Errors><RequestID>00000000-0000-4000-8000-000000000000</RequestID></Response>"#,
                xml_escape(unknown)
            ),
        );
    }
    let items: String = answers
        .availability_zones
        .iter()
        .filter(|(name, _)| named.is_empty() || named.contains(&name.as_str()))
        .map(|(name, id)| {
            format!(
                "<item><zoneName>{}</zoneName><zoneState>available</zoneState><regionName>{REGION}</regionName><zoneId>{}</zoneId><zoneType>availability-zone</zoneType><optInStatus>opt-in-not-required</optInStatus><messageSet/></item>",
                xml_escape(name),
                xml_escape(id)
            )
        })
        .collect();
    Response::xml(format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><DescribeAvailabilityZonesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>00000000-0000-4000-8000-000000000000</requestId><availabilityZoneInfo>{items}</availabilityZoneInfo></DescribeAvailabilityZonesResponse>"#
    ))
}

fn query_answer(shared: &Shared, call: &Call) -> Option<Response> {
    let mut answers = shared.answers.lock().expect("answers");
    let stack_id = format!(
        "arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{STACK}/6c4a5f10-0000-4000-8000-000000000000"
    );
    Some(match (call.service.as_str(), call.action.as_str()) {
        ("sts", "GetCallerIdentity") if !answers.credentials_valid => {
            let mut refused = query_error(
                "InvalidClientTokenId",
                "The security token included in the request is invalid.",
            );
            refused.status = 403;
            refused
        }
        ("sts", "GetCallerIdentity") => query_result(
            "sts",
            "GetCallerIdentity",
            &format!(
                "<Arn>arn:aws:iam::{ACCOUNT}:user/deployer</Arn><UserId>AIDAEXAMPLEUSERID0001</UserId><Account>{ACCOUNT}</Account>"
            ),
        ),
        ("cloudformation", "DescribeStacks") if call.param("StackName") == STACK => {
            let mut outputs = answers.outputs.clone();
            outputs.push(("ProducerUrl".into(), format!("http://{}", shared.addr)));
            let outputs: String = outputs
                .iter()
                .map(|(k, v)| {
                    format!(
                        "<member><OutputKey>{}</OutputKey><OutputValue>{}</OutputValue></member>",
                        xml_escape(k),
                        xml_escape(v)
                    )
                })
                .collect();
            query_result(
                "cloudformation",
                "DescribeStacks",
                &format!(
                    "<Stacks><member><StackName>{STACK}</StackName><StackId>{stack_id}</StackId><CreationTime>2026-01-01T00:00:00.000Z</CreationTime><StackStatus>CREATE_COMPLETE</StackStatus><Parameters><member><ParameterKey>DatabaseDeletionProtection</ParameterKey><ParameterValue>true</ParameterValue></member></Parameters><Outputs>{outputs}</Outputs></member></Stacks>"
                ),
            )
        }
        // SAM's managed stack, whose bucket `--resolve-s3` uses.
        ("cloudformation", "DescribeStacks") if call.param("StackName") == SAM_MANAGED_STACK => {
            query_result(
                "cloudformation",
                "DescribeStacks",
                &format!(
                    "<Stacks><member><StackName>{SAM_MANAGED_STACK}</StackName><StackId>arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{SAM_MANAGED_STACK}/00000000-0000-4000-8000-000000000002</StackId><CreationTime>2026-01-01T00:00:00.000Z</CreationTime><StackStatus>CREATE_COMPLETE</StackStatus><Tags><member><Key>ManagedStackSource</Key><Value>AwsSamCli</Value></member></Tags><Outputs><member><OutputKey>SourceBucket</OutputKey><OutputValue>{SAM_BUCKET}</OutputValue></member></Outputs></member></Stacks>"
                ),
            )
        }
        // The deployed stack's parameters, which sam reads before an update.
        ("cloudformation", "GetTemplateSummary") if call.param("StackName") == STACK => {
            query_result(
                "cloudformation",
                "GetTemplateSummary",
                "<Parameters><member><ParameterKey>Greeting</ParameterKey><ParameterType>String</ParameterType><NoEcho>false</NoEcho></member></Parameters><Version>2010-09-09</Version>",
            )
        }
        ("cloudformation", "CreateChangeSet") => query_result(
            "cloudformation",
            "CreateChangeSet",
            &format!("<Id>{CHANGE_SET}</Id><StackId>{stack_id}</StackId>"),
        ),
        // Created at once, one resource to add: what sam shows before it asks.
        ("cloudformation", "DescribeChangeSet") => query_result(
            "cloudformation",
            "DescribeChangeSet",
            &format!(
                "<ChangeSetName>samcli-deploy</ChangeSetName><ChangeSetId>{CHANGE_SET}</ChangeSetId><StackId>{stack_id}</StackId><StackName>{STACK}</StackName><CreationTime>2026-01-01T00:00:00.000Z</CreationTime><ExecutionStatus>AVAILABLE</ExecutionStatus><Status>CREATE_COMPLETE</Status><Changes><member><Type>Resource</Type><ResourceChange><Action>Add</Action><LogicalResourceId>Topic</LogicalResourceId><ResourceType>AWS::SNS::Topic</ResourceType></ResourceChange></member></Changes>"
            ),
        ),
        ("cloudformation", "DescribeStacks") => query_error(
            "ValidationError",
            &format!("Stack with id {} does not exist", call.param("StackName")),
        ),
        ("cloudformation", "DescribeStackResource") if call.param("StackName") == STACK => {
            let logical = call.param("LogicalResourceId");
            let (physical, kind) = match logical {
                "DatabaseProxy" => (PROXY, "AWS::RDS::DBProxy"),
                "ConsumerLogGroup" => (CONSUMER_LOG_GROUP, "AWS::Logs::LogGroup"),
                _ => {
                    return Some(query_error(
                        "ValidationError",
                        &format!("Resource {logical} does not exist for stack {STACK}"),
                    ));
                }
            };
            query_result(
                "cloudformation",
                "DescribeStackResource",
                &format!(
                    "<StackResourceDetail><StackName>{STACK}</StackName><StackId>{stack_id}</StackId><LogicalResourceId>{logical}</LogicalResourceId><PhysicalResourceId>{}</PhysicalResourceId><ResourceType>{kind}</ResourceType><LastUpdatedTimestamp>2026-01-01T00:00:00.000Z</LastUpdatedTimestamp><ResourceStatus>CREATE_COMPLETE</ResourceStatus></StackResourceDetail>",
                    xml_escape(physical)
                ),
            )
        }
        ("rds", "DescribeDBProxyTargets") if call.param("DBProxyName") == PROXY => {
            let (state, reason, description) = next(&mut answers.proxy_target);
            let optional = |name: &str, value: &str| {
                if value.is_empty() {
                    String::new()
                } else {
                    format!("<{name}>{}</{name}>", xml_escape(value))
                }
            };
            query_result(
                "rds",
                "DescribeDBProxyTargets",
                &format!(
                    "<Targets><member><Endpoint>demo-db.abcdefghijkl.eu-west-1.rds.amazonaws.com</Endpoint><RdsResourceId>demo-db</RdsResourceId><Port>5432</Port><Type>RDS_INSTANCE</Type><Role>READ_WRITE</Role><TargetHealth><State>{state}</State>{}{}</TargetHealth></member></Targets>",
                    optional("Reason", &reason),
                    optional("Description", &description)
                ),
            )
        }
        ("ec2", "DescribeAvailabilityZones") => describe_availability_zones(&answers, call),
        ("rds", "DescribeDBProxyTargets") => query_error(
            "DBProxyNotFoundFault",
            &format!("DBProxy {} not found", call.param("DBProxyName")),
        ),
        _ => return None,
    })
}

/// S3's REST-XML API, path-style (`/bucket/key`, as botocore addresses an IP
/// endpoint): SAM's managed bucket exists, holds nothing, and takes every upload.
fn s3(request: &Request, call: &mut Call) -> Option<Response> {
    let path = request.path.split('?').next().unwrap_or_default();
    let (bucket, key) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path.trim_start_matches('/'), ""));
    if bucket != SAM_BUCKET {
        return None;
    }
    call.params.insert("Bucket".into(), bucket.to_owned());
    if !key.is_empty() {
        call.params.insert("Key".into(), percent_decode(key));
    }
    let mut response = match (request.method.as_str(), key.is_empty()) {
        ("HEAD", true) => {
            call.action = "HeadBucket".into();
            Response::new(200, "application/xml", String::new())
        }
        ("HEAD", false) => {
            call.action = "HeadObject".into();
            Response::new(404, "application/xml", String::new())
        }
        ("PUT", false) => {
            call.action = "PutObject".into();
            call.params.insert(
                "Body".into(),
                String::from_utf8_lossy(&request.body).into_owned(),
            );
            let mut stored = Response::new(200, "application/xml", String::new());
            stored
                .headers
                .push(("ETag", "\"0123456789abcdef0123456789abcdef\"".into()));
            stored
        }
        _ => return None,
    };
    response
        .headers
        .push(("x-amz-bucket-region", REGION.into()));
    Some(response)
}

/// Lambda's REST-JSON API: the action is in the method and path.
fn lambda(shared: &Shared, request: &Request, call: &mut Call) -> Option<Response> {
    let mut answers = shared.answers.lock().expect("answers");
    let path = request.path.split('?').next().unwrap_or_default();
    if request.method == "GET" && path.trim_end_matches('/') == "/2016-08-19/account-settings" {
        call.action = "GetAccountSettings".into();
        let (total, unreserved) = answers.account_concurrency;
        return Some(Response::new(
            200,
            "application/json",
            serde_json::json!({
                "AccountLimit": {
                    "TotalCodeSize": 80_530_636_800_u64,
                    "CodeSizeUnzipped": 262_144_000,
                    "CodeSizeZipped": 52_428_800,
                    "ConcurrentExecutions": total,
                    "UnreservedConcurrentExecutions": unreserved,
                },
                "AccountUsage": { "TotalCodeSize": 0, "FunctionCount": 0 },
            })
            .to_string(),
        ));
    }
    let function = path
        .strip_prefix("/2015-03-31/functions/")
        .and_then(|rest| rest.strip_suffix("/invocations"))?;
    if request.method != "POST" {
        return None;
    }
    call.action = "Invoke".into();
    let function = percent_decode(function);
    call.params.insert("FunctionName".into(), function.clone());
    call.params.insert(
        "Payload".into(),
        String::from_utf8_lossy(&request.body).into_owned(),
    );
    if let Some(kind) = request.headers.get("x-amz-invocation-type") {
        call.params.insert("InvocationType".into(), kind.clone());
    }
    if function == CONSUMER_FUNCTION {
        // The canary's lookup: the consumer answers for the order it is asked about.
        let asked: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let stored = next(&mut answers.consumer_stored);
        return Some(Response::new(
            200,
            "application/json",
            serde_json::json!({ "order_id": asked["lookup"]["order_id"], "stored": stored })
                .to_string(),
        ));
    }
    if function != PROVISION_FUNCTION {
        let mut response = Response::new(
            404,
            "application/json",
            serde_json::json!({
                "Type": "User",
                "message": format!("Function not found: arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function}"),
            })
            .to_string(),
        );
        response
            .headers
            .push(("x-amzn-ErrorType", "ResourceNotFoundException".into()));
        return Some(response);
    }
    let mut response = if answers.provision_function_error.is_empty() {
        Response::new(
            200,
            "application/json",
            r#"{"applied":[1,2],"writer":"orders_writer"}"#.into(),
        )
    } else {
        let mut failed = Response::new(
            200,
            "application/json",
            r#"{"errorType":"&alloc::boxed::Box<dyn core::error::Error>","errorMessage":"the migrate function could not reach the database for 480s"}"#
                .into(),
        );
        failed.headers.push((
            "X-Amz-Function-Error",
            answers.provision_function_error.clone(),
        ));
        failed
    };
    response
        .headers
        .push(("X-Amz-Executed-Version", "$LATEST".into()));
    Some(response)
}
