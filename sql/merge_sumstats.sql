-- polgen query: merge_sumstats
-- Several GWAS summary statistics tables merged on SNP with allele alignment, in long form (one
-- row per SNP and table). The first table is the reference: it fixes the SNP set, A1/A2, CHR and
-- BP. A row whose alleles are swapped versus the reference has BETA and Z negated and A1FREQ
-- replaced by 1 - A1FREQ; a row whose alleles match neither orientation is dropped. Alleles are
-- compared case-insensitively. A SNP id appearing more than once in one table is ambiguous and
-- dropped from that table; reference SNPs with A1 = A2 are dropped.
-- Tables need SNP, A1, A2; BETA, SE, Z, P, N, A1FREQ, CHR, BP are carried when present (NULL else).
-- Pivot to wide form in Polars: df.pivot("trait", index=["SNP", "CHR", "BP", "A1", "A2"], values="BETA").
-- param sumstats        relations           two or more tables: parquet files/globs/dirs or frame names
-- param drop_ambiguous  boolean   = false   drop strand-ambiguous SNPs (A/T, C/G)
-- param require_all     boolean   = true    keep only SNPs present, alignable, in every table
-- output: trait, trait_idx, SNP, CHR, BP, A1, A2, BETA, SE, Z, P, N, A1FREQ, flipped
WITH raw AS (
    SELECT * FROM {{sumstats}}
    UNION ALL BY NAME
    SELECT NULL AS CHR, NULL AS BP, NULL::DOUBLE AS BETA, NULL::DOUBLE AS SE, NULL::DOUBLE AS Z,
           NULL::DOUBLE AS P, NULL::DOUBLE AS N, NULL::DOUBLE AS A1FREQ WHERE false
),
clean AS (
    SELECT _src, _src_name, CAST(SNP AS VARCHAR) AS SNP,
           upper(trim(CAST(A1 AS VARCHAR))) AS A1, upper(trim(CAST(A2 AS VARCHAR))) AS A2,
           CHR, BP, CAST(BETA AS DOUBLE) AS BETA, CAST(SE AS DOUBLE) AS SE, CAST(Z AS DOUBLE) AS Z,
           CAST(P AS DOUBLE) AS P, CAST(N AS DOUBLE) AS N, CAST(A1FREQ AS DOUBLE) AS A1FREQ
    FROM raw
    WHERE SNP IS NOT NULL AND A1 IS NOT NULL AND A2 IS NOT NULL
    QUALIFY count(*) OVER (PARTITION BY _src, SNP) = 1
),
ref AS (
    SELECT * FROM clean
    WHERE _src = 0 AND A1 <> A2 AND NOT ($drop_ambiguous AND polgen_ambiguous(A1, A2))
),
aligned AS (
    SELECT c._src, c._src_name, r.SNP, coalesce(r.CHR, c.CHR) AS CHR, coalesce(r.BP, c.BP) AS BP,
           r.A1, r.A2, (c.A1 = r.A2 AND c.A2 = r.A1) AS flipped,
           c.BETA, c.SE, c.Z, c.P, c.N, c.A1FREQ
    FROM clean c
    JOIN ref r ON c.SNP = r.SNP
    WHERE (c.A1 = r.A1 AND c.A2 = r.A2) OR (c.A1 = r.A2 AND c.A2 = r.A1)
),
kept AS (
    SELECT * FROM aligned
    QUALIFY NOT $require_all
        OR count(*) OVER (PARTITION BY SNP) = (SELECT count(*) FROM {{sumstats:sources}})
)
SELECT _src_name AS trait,
       _src AS trait_idx,
       SNP, CHR, BP, A1, A2,
       CASE WHEN flipped THEN -BETA ELSE BETA END AS BETA,
       SE,
       CASE WHEN flipped THEN -Z ELSE Z END AS Z,
       P, N,
       CASE WHEN flipped THEN 1 - A1FREQ ELSE A1FREQ END AS A1FREQ,
       flipped
FROM kept
ORDER BY polgen_chrom_code(CHR) NULLS LAST, BP NULLS LAST, SNP, trait_idx
