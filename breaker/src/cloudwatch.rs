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

    /// The sum of each group of `(namespace, metrics)` between `from` and
    /// `to`; Lambda's own (`AWS/Lambda`) of the alias only.
    async fn sums<const N: usize>(
        &self,
        groups: [(&str, &[&str]); N],
        from: SystemTime,
        to: SystemTime,
    ) -> Result<[u64; N], FiguresError> {
        // One period over the whole window; GetMetricData wants multiples of 60 s.
        let span = to.duration_since(from).unwrap_or_default().as_secs();
        let period = (span.div_ceil(60).max(1) * 60).min(i32::MAX as u64) as i32;
        let mut queries = Vec::new();
        for (group, (namespace, names)) in groups.iter().enumerate() {
            for (i, name) in names.iter().enumerate() {
                let metric = Metric::builder()
                    .namespace(*namespace)
                    .metric_name(*name)
                    .set_dimensions(Some(self.dimensions(*namespace == LAMBDA)))
                    .build();
                let stat = MetricStat::builder().metric(metric).period(period);
                queries.push(
                    MetricDataQuery::builder()
                        .id(format!("m{group}_{i}"))
                        .metric_stat(stat.stat("Sum").build())
                        .build(),
                );
            }
        }
        // The group from a result's id, `m{group}_{metric}`.
        let group = |id: &str| id.split(['m', '_']).nth(1)?.parse::<usize>().ok();
        let mut sums = [0.0; N];
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
                if let Some(sum) = result.id().and_then(group).and_then(|g| sums.get_mut(g)) {
                    *sum += result.values().iter().sum::<f64>();
                }
            }
        }
        Ok(sums.map(|sum| sum.max(0.0) as u64))
    }
}

impl Figures for CloudWatchFigures {
    async fn batches(&self, from: SystemTime, to: SystemTime) -> Result<Batches, FiguresError> {
        let groups = [
            (NAMESPACE, RECORDS),
            (NAMESPACE, FINISHED),
            (NAMESPACE, DEFERRED),
            (LAMBDA, &["Errors"]),
        ];
        let [records, finished, deferred, failed_invocations] = self.sums(groups, from, to).await?;
        Ok(Batches {
            records,
            finished,
            deferred,
            failed_invocations,
        })
    }

    async fn trips(&self, from: SystemTime, to: SystemTime) -> Result<u32, FiguresError> {
        if to <= from {
            return Ok(0);
        }
        let [trips] = self
            .sums([(NAMESPACE, &[BREAKER_TRIPPED])], from, to)
            .await?;
        Ok(u32::try_from(trips).unwrap_or(u32::MAX))
    }
}
