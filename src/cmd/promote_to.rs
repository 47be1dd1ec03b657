//! `hoist promote SHA --to REGISTRY`: build once, promote anywhere. The
//! images `staging-<sha7>` names in the source registry are copied digest
//! for digest to each destination ([`crate::registry::copy`]), then the
//! destination's `staging-<sha7>`, `latest-previous` and `latest` move as
//! `hoist promote` moves them in one registry. The source's tags are not
//! touched.
//!
//! All images or none, per destination: every image is copied to every
//! destination before any destination tag moves, so a failed copy leaves
//! the destinations' tags as they were (the blobs it copied are harmless,
//! and a re-run does not send them again). The tag moves follow promote's
//! rules in the destination: never backwards without `--allow-older`
//! (judged against the destination's `latest`), read again after the copy
//! (and any canary wait) before the first move, put back when a write
//! fails, read back at the end. A blob several images lack is sent once
//! ([`copy::apply_all`]).
//!
//! Credentials are each registry's own: `HOIST_REGISTRY_USER_<HOST>`, the
//! Docker config, or for ECR the AWS credentials with the destination's
//! `aws_profile` and `aws_role_arn` from `promote.to`. The plain
//! `HOIST_REGISTRY_USER`/`HOIST_REGISTRY_PASSWORD` pair belongs to the
//! source (`--registry`) and is never sent to another host.

use super::promote::{
    Found, Plan, PlannedImage, Setup, Tags, apply, compare, directions, env, identities,
    not_published, plan_lines, runtime, short, wait_for_canaries,
};
use crate::ci::{Ci, markdown, markdown_code};
use crate::cli::{Format, PromoteArgs};
use crate::config::{AwsSettings, Destination};
use crate::context::human_bytes;
use crate::error::{Error, Result};
use crate::promote::{self, Direction, LATEST, LATEST_PREVIOUS, Move};
use crate::registry::copy::{self, Copied, End};
use crate::registry::{Manifest, Registry, Target};
use futures_util::future::join_all;
use serde::Serialize;
use std::collections::HashMap;
use std::time::Instant;

/// What copying one image to one destination takes, as planned.
#[derive(Debug, Clone, Serialize)]
pub struct CopyNeeds {
    /// Manifests to write by digest (an index's children included); 0 when
    /// the destination holds the image already.
    pub manifests: usize,
    /// Blobs the destination lacks, and their bytes.
    pub blobs: usize,
    pub bytes: u64,
    /// Blobs the destination holds already.
    pub blobs_present: usize,
    /// The destination's `staging-<sha7>` before the move (`None`: absent);
    /// it is written unless it names the image already.
    pub staging_from: Option<String>,
    /// Whether the repository is created first (`--create-repos`).
    pub create_repository: bool,
    /// Whether the blobs are mounted from the source repository (the same
    /// registry host) rather than sent.
    pub mount: bool,
}

/// One destination: its registry, what every image needs there, and the
/// tag moves.
struct Leg {
    target: Target,
    registry: Registry,
    tags: Vec<Tags>,
    /// `staging-<sha7>` in the destination, per image.
    staging_there: Vec<Option<Manifest>>,
    plans: Vec<copy::Plan>,
    directions: Vec<Direction>,
    moves: Vec<Move>,
    /// Repositories to create before the copy (`--create-repos`).
    create: Vec<String>,
}

/// The source's image of each selected image: its manifest and the
/// commits the registry names for it.
async fn read_sources(
    source: &Registry,
    images: &[(String, String)],
    tag: &str,
) -> Result<Vec<Tags>> {
    let reads = images.iter().map(|(name, repository)| async move {
        let manifest = source.manifest(repository, tag).await?;
        let revisions = match &manifest {
            Some(manifest) => source.revisions(repository, manifest).await?,
            None => Vec::new(),
        };
        Ok::<_, Error>(Tags {
            name: name.clone(),
            repository: repository.clone(),
            source: manifest,
            latest: None,
            latest_revision: None,
            source_revisions: revisions,
            previous: None,
        })
    });
    join_all(reads).await.into_iter().collect()
}

/// The environment a destination's client sees: the source's plain login
/// pair is left out for another host, so that one registry's password
/// never reaches another.
fn destination_env(source_host: &str, host: &str) -> impl Fn(&str) -> Option<String> + use<> {
    let own = source_host == host;
    move |name: &str| match name {
        "HOIST_REGISTRY_USER" | "HOIST_REGISTRY_PASSWORD" if !own => None,
        _ => env(name),
    }
}

/// Reads one destination: what its `staging-<sha7>`, `latest` and
/// `latest-previous` name per image, the commit of a `latest` that is not
/// the image, and what a copy lacks there.
async fn read_leg(
    destination: &Destination,
    source: &Registry,
    source_target: &Target,
    sources: &[Tags],
    source_tag: &str,
    create_repos: bool,
) -> Result<Leg> {
    let target = Target::parse(&destination.registry).map_err(|e| {
        e.caused_by("given as a destination (--to, HOIST_PROMOTE_TO or promote.to in hoist.yaml)")
    })?;
    if target.ecr().is_none() && destination.aws != AwsSettings::default() {
        return Err(Error::input(format!(
            "promote.to gives AWS settings for {}, which is not an ECR registry",
            destination.registry
        ))
        .hint("aws_profile and aws_role_arn apply to <account>.dkr.ecr.<region>.amazonaws.com registries; remove them, or check the registry"));
    }
    let dest_env = destination_env(&source_target.host, &target.host);
    let registry = Registry::connect_with(&target, &destination.aws, &dest_env).await?;
    let mut create = Vec::new();
    for s in sources {
        let repository = target.repository(&s.name);
        if !registry.repository_exists(&repository).await? {
            if !create_repos {
                return Err(Error::failed(format!(
                    "nothing promoted: the repository {repository} does not exist in {}",
                    target.host
                ))
                .hint("pass --create-repos to create it (as publish creates repositories), or create it yourself"));
            }
            create.push(repository);
        }
    }
    let source_blobs = source.blob_client(source_target).await?;
    let dest_blobs = registry.blob_client(&target).await?;
    let reads = sources.iter().map(|s| {
        let repository = target.repository(&s.name);
        let (registry, source_blobs, dest_blobs) = (&registry, &source_blobs, &dest_blobs);
        let fresh = create.contains(&repository);
        async move {
            let manifest = s
                .source
                .as_ref()
                .ok_or_else(|| Error::failed(format!("{}: no image to copy", s.repository)))?;
            let from = End {
                registry: source,
                blobs: source_blobs,
                repository: &s.repository,
            };
            if fresh {
                let tags = Tags {
                    name: s.name.clone(),
                    repository: repository.clone(),
                    source: Some(manifest.clone()),
                    latest: None,
                    latest_revision: None,
                    source_revisions: Vec::new(),
                    previous: None,
                };
                return Ok((tags, None, copy::plan_fresh(from, manifest).await?));
            }
            let (staging, latest) = futures_util::try_join!(
                registry.manifest(&repository, source_tag),
                registry.manifest(&repository, LATEST),
            )?;
            // `latest-previous` matters only when `latest` moves: a re-run
            // reads two tags per image here, and nothing else.
            let previous = match &latest {
                Some(latest) if latest.digest == manifest.digest => None,
                _ => registry.manifest(&repository, LATEST_PREVIOUS).await?,
            };
            let latest_revision = match &latest {
                Some(latest) if latest.digest != manifest.digest => {
                    registry.revision(&repository, latest).await?
                }
                _ => None,
            };
            let plan = if staging.as_ref().map(|m| &m.digest) == Some(&manifest.digest) {
                // Its staging tag names the image: everything is there.
                copy::Plan::default()
            } else {
                let to = End {
                    registry,
                    blobs: dest_blobs,
                    repository: &repository,
                };
                copy::plan(from, to, manifest).await?
            };
            let tags = Tags {
                name: s.name.clone(),
                repository,
                source: Some(manifest.clone()),
                latest,
                latest_revision,
                source_revisions: Vec::new(),
                previous,
            };
            Ok::<_, Error>((tags, staging, plan))
        }
    });
    let mut tags = Vec::new();
    let mut staging_there = Vec::new();
    let mut plans = Vec::new();
    for read in join_all(reads).await {
        let (t, staging, plan) = read?;
        tags.push(t);
        staging_there.push(staging);
        plans.push(plan);
    }
    Ok(Leg {
        target,
        registry,
        tags,
        staging_there,
        plans,
        directions: Vec::new(),
        moves: Vec::new(),
        create,
    })
}

pub(super) fn promote_to(
    setup: &Setup,
    args: &PromoteArgs,
    found: Found<'_>,
    ci: &Ci,
) -> Result<u8> {
    let Found {
        repo,
        named,
        sha,
        source_tag,
    } = found;
    refuse_repeats(&setup.config.promote_to)?;
    let runtime = runtime()?;
    let started = Instant::now();
    let source = runtime.block_on(setup.connect())?;
    let sources = runtime.block_on(read_sources(&source, &setup.images, source_tag))?;
    let missing: Vec<String> = sources
        .iter()
        .filter(|t| t.source.is_none())
        .map(|t| format!("{}:{source_tag}", t.repository))
        .collect();
    if !missing.is_empty() {
        return Err(not_published(named, &missing, &setup.target));
    }
    let identities = identities(&sources, sha, source_tag)?;
    for (t, identity) in sources.iter().zip(&identities) {
        if *identity == promote::Identity::Untold {
            ci.warn(&format!(
                "{}: {}:{source_tag} does not say which commit it was built from: copying it unchecked",
                t.name, t.repository
            ));
        }
    }

    let mut legs = Vec::new();
    for destination in &setup.config.promote_to {
        let leg = runtime.block_on(read_leg(
            destination,
            &source,
            &setup.target,
            &sources,
            source_tag,
            args.create_repos,
        ))?;
        legs.push(leg);
    }

    // A staging tag in a destination that names another image: another
    // build of the commit, or a tag pushed by hand. Moving it is not
    // promote's call.
    let mut conflicts = Vec::new();
    for leg in &legs {
        for (t, staging) in leg.tags.iter().zip(&leg.staging_there) {
            let Some(wanted) = t.source.as_ref().map(|m| &m.digest) else {
                continue;
            };
            if let Some(there) = staging.as_ref().filter(|m| &m.digest != wanted) {
                conflicts.push(format!(
                    "{}: {}/{}:{source_tag} names {}, the source's names {}",
                    t.name,
                    leg.target.host,
                    t.repository,
                    short(&there.digest),
                    short(wanted)
                ));
            }
        }
    }
    if !conflicts.is_empty() {
        let mut error = Error::failed(format!(
            "nothing promoted: {source_tag} names another image in the destination"
        ));
        for line in conflicts {
            error = error.caused_by(line);
        }
        return Err(error.hint(
            "the destination holds another build of this commit under the same tag: \
             check which image is the one tested (`hoist status --registry DEST`), and point \
             the tag there at the source's image by hand if that is the one to ship",
        ));
    }

    let mut refused = Vec::new();
    for leg in &mut legs {
        leg.directions = directions(
            repo,
            &setup.config.root,
            sha,
            &leg.tags,
            !args.allow_older,
            ci,
        );
        for (t, direction) in leg.tags.iter().zip(&leg.directions) {
            if direction.needs_allow_older() {
                refused.push(format!(
                    "{}: {}: {}",
                    leg.target,
                    t.name,
                    direction.describe(&sha[..7])
                ));
            }
        }
        leg.moves = leg
            .tags
            .iter()
            .filter_map(|t| {
                promote::promotion(
                    &t.name,
                    &t.repository,
                    &t.source.as_ref()?.digest,
                    t.latest.as_ref().map(|m| m.digest.as_str()),
                    t.previous.as_ref().map(|m| m.digest.as_str()),
                )
            })
            .collect();
    }
    if !refused.is_empty() && !args.allow_older {
        let mut error = Error::failed(format!(
            "nothing promoted: `{LATEST}` would not move forward to {} in the destination",
            &sha[..7]
        ));
        for line in refused {
            error = error.caused_by(line);
        }
        return Err(error.hint(
            "to go back on purpose, pass --allow-older; in CI, check out the whole history \
             (fetch-depth: 0) so hoist can tell",
        ));
    }

    let plan = ToPlan {
        sha: sha.to_string(),
        source_tag: source_tag.to_string(),
        registry: setup.target.to_string(),
        to: legs
            .iter()
            .map(|leg| leg_plan(leg, &setup.target, sha, source_tag))
            .collect(),
        canaries: args.wait_for.clone(),
    };
    if args.dry_run {
        return print_to_plan(&plan, args.format, ci);
    }

    let moving = legs.iter().any(|leg| !leg.moves.is_empty());
    let mut canaries = Vec::new();
    if moving && !args.wait_for.is_empty() {
        canaries = wait_for_canaries(&runtime, args, sha, ci)?;
    }
    let (blobs, bytes) = legs
        .iter()
        .flat_map(|leg| &leg.plans)
        .fold((0, 0), |(n, b), plan| {
            (n + plan.missing.len(), b + plan.missing_bytes())
        });
    if blobs > 0 {
        ci.say(&format!(
            "copying {blobs} blob(s), {}, to {} destination(s)",
            human_bytes(bytes),
            legs.len()
        ));
    }
    let copied = runtime.block_on(copy_all(
        &source,
        &setup.target,
        &sources,
        &legs,
        setup.config.push,
        ci,
    ))?;
    // The plan's reads are as old as the copy (minutes for large images)
    // and any wait: read every destination's `latest` again before the
    // first moves.
    for leg in &legs {
        runtime
            .block_on(compare(&leg.registry, &leg.tags, &leg.moves))
            .map_err(|e| e.caused_by(format!("in {}", leg.target)))?;
    }
    let mut moved = Vec::new();
    for leg in &legs {
        let done = runtime.block_on(move_leg(leg, source_tag));
        if let Err(error) = done {
            return Err(match moved.is_empty() {
                true => error,
                false => error.caused_by(format!(
                    "already promoted, and left so: {}",
                    moved.join(", ")
                )),
            });
        }
        moved.push(leg.target.to_string());
    }
    let report = ToReport {
        dry_run: false,
        plan: &plan,
        promoted: true,
        copied,
        moved: plan
            .to
            .iter()
            .flat_map(|p| &p.images)
            .map(|i| i.writes.len() + usize::from(staging_written(i)))
            .sum(),
        canaries,
        retries: source.retries() + legs.iter().map(|l| l.registry.retries()).sum::<u32>(),
        seconds: started.elapsed().as_secs_f64(),
    };
    print_to_report(&report, args.format, ci)
}

fn staging_written(image: &PlannedImage) -> bool {
    image
        .copy
        .as_ref()
        .is_some_and(|c| c.staging_from.as_deref() != Some(image.digest.as_str()))
}

/// A destination listed twice (`host/x` and `host/x/` alike) would be
/// copied to twice at once and moved twice: refused.
fn refuse_repeats(destinations: &[Destination]) -> Result<()> {
    let mut seen: Vec<Target> = Vec::new();
    for destination in destinations {
        let Ok(target) = Target::parse(&destination.registry) else {
            continue;
        };
        if seen.contains(&target) {
            return Err(
                Error::input(format!("the destination {target} is listed twice"))
                    .hint("name each destination once (--to, HOIST_PROMOTE_TO or promote.to)"),
            );
        }
        seen.push(target);
    }
    Ok(())
}

/// Copies every image to every destination, all at once; an error names
/// every copy that failed and says that no tag moved.
async fn copy_all(
    source: &Registry,
    source_target: &Target,
    sources: &[Tags],
    legs: &[Leg],
    push: crate::config::PushConfig,
    ci: &Ci,
) -> Result<Vec<Copied>> {
    let options = copy::Options::new(push.chunk_size, push.jobs);
    let source_blobs = source.blob_client(source_target).await?;
    let source_blobs = &source_blobs;
    let options = &options;
    // Every destination at once; the blobs share `push.jobs` slots.
    let per_leg = join_all(legs.iter().map(|leg| async move {
        for repository in &leg.create {
            if let Some(how) = leg
                .registry
                .ensure_repository(repository, crate::registry::Missing::Create)
                .await?
            {
                ci.say(&format!("{}/{repository}: {how}", leg.target.host));
            }
        }
        let dest_blobs = leg.registry.blob_client(&leg.target).await?;
        let jobs: Vec<copy::Job> = sources
            .iter()
            .zip(&leg.tags)
            .zip(&leg.plans)
            .map(|((s, t), plan)| copy::Job {
                source: End {
                    registry: source,
                    blobs: source_blobs,
                    repository: &s.repository,
                },
                dest: End {
                    registry: &leg.registry,
                    blobs: &dest_blobs,
                    repository: &t.repository,
                },
                plan,
            })
            .collect();
        // A blob several images lack is sent once and mounted into the
        // others' repositories.
        let results = copy::apply_all(&jobs, options).await;
        for (t, copied) in leg.tags.iter().zip(&results) {
            let Ok(copied) = copied else { continue };
            if copied.blobs_copied + copied.blobs_mounted + copied.manifests > 0 {
                ci.say(&format!(
                    "{}: copied to {}/{}: {} blob(s), {}, {} mounted, {} manifest(s){}",
                    t.name,
                    leg.target.host,
                    t.repository,
                    copied.blobs_copied,
                    human_bytes(copied.bytes),
                    copied.blobs_mounted,
                    copied.manifests,
                    if copied.resumed > 0 {
                        format!(", {} resumed after a cut", copied.resumed)
                    } else {
                        String::new()
                    }
                ));
            }
        }
        Ok::<_, Error>(results)
    }))
    .await;
    let mut totals = Vec::new();
    let mut failures = Vec::new();
    for (leg, results) in legs.iter().zip(per_leg) {
        let mut total = Copied::default();
        let results = match results {
            Ok(results) => results,
            Err(error) => {
                failures.push((leg.target.to_string(), error));
                totals.push(total);
                continue;
            }
        };
        for (t, result) in leg.tags.iter().zip(results) {
            match result {
                Ok(copied) => total.add(&copied),
                Err(error) => {
                    failures.push((format!("{}/{}", leg.target.host, t.repository), error))
                }
            }
        }
        totals.push(total);
    }
    if failures.is_empty() {
        return Ok(totals);
    }
    let mut error = Error::failed(format!(
        "nothing promoted: {} of the copies failed, and no destination tag moved",
        failures.len()
    ));
    let mut hint = None;
    for (what, failure) in failures {
        error = error.caused_by(format!("{what}: {}", failure.message));
        for cause in &failure.causes {
            error = error.caused_by(format!("  {cause}"));
        }
        hint = hint.or(failure.hint.clone());
    }
    Err(error.hint(hint.unwrap_or_else(|| {
        "run the same command again: what was copied stays in the destination and is not sent \
         again"
            .to_string()
    })))
}

/// Writes the destination's `staging-<sha7>` of every image, then moves
/// `latest-previous` and `latest` as promote does.
async fn move_leg(leg: &Leg, source_tag: &str) -> Result<()> {
    let staging = leg
        .tags
        .iter()
        .zip(&leg.staging_there)
        .filter_map(|(t, there)| {
            let manifest = t.source.as_ref()?;
            let fresh = there.as_ref().map(|m| &m.digest) != Some(&manifest.digest);
            fresh.then_some(async move {
                let written = leg
                    .registry
                    .put_manifest(&t.repository, source_tag, manifest)
                    .await;
                (t, written)
            })
        });
    for (t, result) in join_all(staging).await {
        result.map_err(|e| {
            Error::failed(format!(
                "latest did not move in {}: cannot write {}:{source_tag}",
                leg.target, t.repository
            ))
            .caused_by(&e.message)
            .hint("the images are copied; run the same command again")
        })?;
    }
    let mut manifests = HashMap::new();
    for t in &leg.tags {
        for manifest in [&t.source, &t.latest, &t.previous].into_iter().flatten() {
            manifests.insert(manifest.digest.clone(), manifest.clone());
        }
    }
    apply(&leg.registry, &leg.moves, &manifests).await
}

/// What `hoist promote --to` plans: per destination, promote's plan with
/// what each image's copy takes.
#[derive(Serialize)]
struct ToPlan {
    sha: String,
    source_tag: String,
    /// The source registry.
    registry: String,
    /// Per destination: its registry and images (promote's plan of it).
    #[serde(serialize_with = "destinations")]
    to: Vec<Plan>,
    canaries: Vec<String>,
}

/// Each destination's plan as `{registry, images}`: the rest of promote's
/// plan (the sha, the tag, the canaries) is the promotion's, said once.
fn destinations<S: serde::Serializer>(plans: &[Plan], serializer: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Destination<'a> {
        registry: &'a str,
        images: &'a [PlannedImage],
    }
    serializer.collect_seq(plans.iter().map(|plan| Destination {
        registry: &plan.registry,
        images: &plan.images,
    }))
}

fn leg_plan(leg: &Leg, source: &Target, sha: &str, source_tag: &str) -> Plan {
    Plan {
        verb: "promote",
        sha: Some(sha.to_string()),
        source_tag: Some(source_tag.to_string()),
        registry: leg.target.to_string(),
        images: leg
            .tags
            .iter()
            .zip(&leg.directions)
            .zip(leg.plans.iter().zip(&leg.staging_there))
            .map(|((t, direction), (plan, staging))| PlannedImage {
                name: t.name.clone(),
                repository: t.repository.clone(),
                digest: t
                    .source
                    .as_ref()
                    .map(|m| m.digest.clone())
                    .unwrap_or_default(),
                direction: Some(direction.clone()),
                identity: None,
                copy: Some(CopyNeeds {
                    manifests: plan.manifests.len(),
                    blobs: plan.missing.len(),
                    bytes: plan.missing_bytes(),
                    blobs_present: plan.present.len(),
                    staging_from: staging.as_ref().map(|m| m.digest.clone()),
                    create_repository: leg.create.contains(&t.repository),
                    mount: leg.target.host == source.host,
                }),
                writes: leg
                    .moves
                    .iter()
                    .find(|m| m.image == t.name)
                    .map(|m| m.writes.clone())
                    .unwrap_or_default(),
            })
            .collect(),
        canaries: Vec::new(),
    }
}

/// The copy lines and tag moves of every destination.
fn to_lines(plan: &ToPlan) -> String {
    let mut text = String::new();
    for leg in &plan.to {
        text.push_str(&format!("to {}:\n", leg.registry));
        for image in &leg.images {
            let Some(copy) = &image.copy else { continue };
            let what = if copy.manifests == 0 {
                "already there".to_string()
            } else {
                format!(
                    "{} {} blob(s), {}, and {} manifest(s); {} blob(s) already there",
                    if copy.mount { "mount" } else { "copy" },
                    copy.blobs,
                    human_bytes(copy.bytes),
                    copy.manifests,
                    copy.blobs_present
                )
            };
            let create = if copy.create_repository {
                format!(" (creates the repository {})", image.repository)
            } else {
                String::new()
            };
            text.push_str(&format!(
                "  {}: {} {what}{create}\n",
                image.name,
                short(&image.digest)
            ));
            if staging_written(image) {
                text.push_str(&format!(
                    "  {}: {}:{} {} -> {}\n",
                    image.name,
                    image.repository,
                    plan.source_tag,
                    copy.staging_from.as_deref().map_or("(none)", short),
                    short(&image.digest)
                ));
            }
        }
        for line in plan_lines(leg).lines() {
            text.push_str(&format!("  {line}\n"));
        }
    }
    text
}

fn print_to_plan(plan: &ToPlan, format: Format, ci: &Ci) -> Result<u8> {
    match format {
        Format::Json => {
            #[derive(Serialize)]
            struct DryRun<'a> {
                dry_run: bool,
                #[serde(flatten)]
                plan: &'a ToPlan,
            }
            ci.out(&super::json(&DryRun {
                dry_run: true,
                plan,
            }))?;
        }
        Format::Text => {
            let mut text = format!(
                "hoist promote --dry-run: {} from {} (nothing is written)\n",
                plan.source_tag, plan.registry
            );
            text.push_str(&to_lines(plan));
            if !plan.canaries.is_empty() {
                text.push_str(&format!(
                    "would first wait for {} canar{}: {}\n",
                    plan.canaries.len(),
                    if plan.canaries.len() == 1 { "y" } else { "ies" },
                    plan.canaries.join(", ")
                ));
            }
            ci.out(&text)?;
        }
    }
    Ok(0)
}

#[derive(Serialize)]
struct ToReport<'a> {
    dry_run: bool,
    #[serde(flatten)]
    plan: &'a ToPlan,
    /// Whether `latest` names the image in every destination now.
    promoted: bool,
    /// What was copied, per destination (in the order of `to`).
    copied: Vec<Copied>,
    /// How many tags were written.
    moved: usize,
    #[serde(skip)]
    canaries: Vec<crate::canary::Canary>,
    retries: u32,
    seconds: f64,
}

fn print_to_report(report: &ToReport, format: Format, ci: &Ci) -> Result<u8> {
    let plan = report.plan;
    match format {
        Format::Json => {
            // `canaries` of the plan are URLs; the report's are states.
            let mut value = serde_json::to_value(report).unwrap_or_default();
            value["canaries"] = serde_json::to_value(&report.canaries).unwrap_or_default();
            ci.out(&super::json(&value))?;
        }
        Format::Text => {
            let mut text = to_lines(plan);
            let copied = report.copied.iter().fold(Copied::default(), |mut all, c| {
                all.add(c);
                all
            });
            text.push_str(&format!(
                "{LATEST} names {} in {} destination(s) for {} image(s) in {:.1} s: \
                 {} blob(s) copied ({}), {} already there, {} mounted; {} tag(s) written, \
                 {} request(s) retried\n",
                plan.source_tag,
                plan.to.len(),
                plan.to.first().map_or(0, |p| p.images.len()),
                report.seconds,
                copied.blobs_copied,
                human_bytes(copied.bytes),
                copied.blobs_skipped,
                copied.blobs_mounted,
                report.moved,
                report.retries
            ));
            ci.out(&text)?;
        }
    }
    ci.set_output("promoted", "true")?;
    if let Some(first) = plan.to.first() {
        for image in &first.images {
            ci.set_output(&format!("{}-digest", image.name), &image.digest)?;
        }
    }
    ci.add_summary(&summary(report))?;
    Ok(0)
}

fn summary(report: &ToReport) -> String {
    let plan = report.plan;
    let mut out = format!(
        "### hoist promote --to\n\n{} from {} in {:.1} s\n\n",
        markdown_code(&plan.source_tag),
        markdown_code(&plan.registry),
        report.seconds
    );
    out.push_str("| destination | image | copied | bytes | latest |\n|---|---|---|---|---|\n");
    for leg in &plan.to {
        for image in &leg.images {
            let blobs = image.copy.as_ref().map_or(0, |c| c.blobs);
            out.push_str(&format!(
                "| {} | {} | {} blob(s) | {} | {} |\n",
                markdown_code(&leg.registry),
                markdown(&image.name),
                blobs,
                human_bytes(image.copy.as_ref().map_or(0, |c| c.bytes)),
                markdown_code(short(&image.digest))
            ));
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_login_stays_with_the_source() {
        let other = destination_env("src.example.com", "dest.example.com");
        assert_eq!(other("HOIST_REGISTRY_USER"), None);
        assert_eq!(other("HOIST_REGISTRY_PASSWORD"), None);
    }
}
