//! The figures in AWS, read with CloudWatch's `GetMetricData`
//! (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_GetMetricData.html>):
//! the consumer's EMF counts and the breaker's trips in the consumer's
//! namespace, dimensioned by the consumer function's name, and Lambda's
//! `Errors` for the invocations that failed whole and so printed no counts,
//! those of the alias the mapping invokes only (dimensions `FunctionName` and
//! `Resource` = `NAME:ALIAS`), so that a pre-traffic hook's invocations of a
//! new version do not count.
//! One query per metric, each summed over one period that spans the window.

use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};

use crate::figures::{Batches, DEFERRED, FINISHED, Figures, FiguresError, RECORDS};
use crate::function::{BREAKER_TRIPPED, NAMESPACE};

/// Lambda's own metrics.
const LAMBDA: &str = "AWS/Lambda";

/// Reads the figures of one consumer function.
#[derive(Debug, Clone)]
pub struct CloudWatchFigures {
    client: Client,
    /// The consumer function's name, as its metrics carry it.
    function: String,
    /// The alias the mapping invokes, when the function is given by its
    /// alias: Lambda's own metrics of that alias only.
    alias: Option<String>,
}

impl CloudWatchFigures {
    pub fn new(client: Client, function: impl Into<String>, alias: Option<String>) -> Self {
        Self {
            client,
            function: function.into(),
            alias,
        }
    }

    fn dimensions(&self, of_alias: bool) -> Vec<Dimension> {
        let dimension =
            |name: &str, value: &str| Dimension::builder().name(name).value(value).build();
        let mut dimensions = vec![dimension("FunctionName", &self.function)];
        if let Some(alias) = self.alias.as_deref().filter(|_| of_alias) {
            dimensions.push(dimension("Resource", &format!("{}:{alias}", self.function)));
        }
        dimensions
    }

    /// The sum of each `(namespace, metric)` between `from` and `to`;
    /// Lambda's own (`AWS/Lambda`) of the alias only.
    async fn sums(
        &self,
        metrics: &[(&str, &str)],
        from: SystemTime,
        to: SystemTime,
    ) -> Result<Vec<f64>, FiguresError> {
        // One period over the whole window; GetMetricData wants multiples of 60 s.
        let span = to.duration_since(from).unwrap_or_default().as_secs();
        let period = (span.div_ceil(60).max(1) * 60).min(i32::MAX as u64) as i32;
        let queries: Vec<MetricDataQuery> = metrics
            .iter()
            .enumerate()
            .map(|(i, (namespace, name))| {
                let metric = Metric::builder()
                    .namespace(*namespace)
                    .metric_name(*name)
                    .set_dimensions(Some(self.dimensions(*namespace == LAMBDA)))
                    .build();
                MetricDataQuery::builder()
                    .id(format!("m{i}"))
                    .metric_stat(
                        MetricStat::builder()
                            .metric(metric)
                            .period(period)
                            .stat("Sum")
                            .build(),
                    )
                    .build()
            })
            .collect();
        let mut sums = vec![0.0; metrics.len()];
        let mut pages = self
            .client
            .get_metric_data()
            .set_metric_data_queries(Some(queries))
            .start_time(DateTime::from(from))
            .end_time(DateTime::from(to.max(from + Duration::from_secs(1))))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| FiguresError(Box::new(err)))?;
            for result in page.metric_data_results() {
                let index = result
                    .id()
                    .and_then(|id| id.strip_prefix('m'))
                    .and_then(|i| i.parse::<usize>().ok());
                if let Some(sum) = index.and_then(|i| sums.get_mut(i)) {
                    *sum += result.values().iter().sum::<f64>();
                }
            }
        }
        Ok(sums)
    }
}

impl Figures for CloudWatchFigures {
    async fn batches(&self, from: SystemTime, to: SystemTime) -> Result<Batches, FiguresError> {
        let mut metrics: Vec<(&str, &str)> = Vec::new();
        for group in [RECORDS, FINISHED, DEFERRED] {
            metrics.extend(group.iter().map(|name| (NAMESPACE, *name)));
        }
        metrics.push((LAMBDA, "Errors"));
        let sums = self.sums(&metrics, from, to).await?;
        let total = |skip: usize, take: usize| {
            sums.iter().skip(skip).take(take).sum::<f64>().max(0.0) as u64
        };
        let (r, f, d) = (RECORDS.len(), FINISHED.len(), DEFERRED.len());
        Ok(Batches {
            records: total(0, r),
            finished: total(r, f),
            deferred: total(r + f, d),
            failed_invocations: total(r + f + d, 1),
        })
    }

    async fn trips(&self, from: SystemTime, to: SystemTime) -> Result<u32, FiguresError> {
        if to <= from {
            return Ok(0);
        }
        let sums = self.sums(&[(NAMESPACE, BREAKER_TRIPPED)], from, to).await?;
        Ok(sums.first().copied().unwrap_or_default().max(0.0) as u32)
    }
}
