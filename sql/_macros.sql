-- polgen SQL helpers: loaded into every connection before a named query runs (not a query).
-- polgen_chrom_code(c): chromosome label -> integer code: '1'..'22' (with or without a 'chr'
--   prefix, any case) -> 1..22, X -> 23, Y -> 24, XY -> 25, MT/M -> 26 (PLINK codes), else NULL.
-- polgen_genome_pos(c, pos): one BIGINT ordering the genome, chrom_code << 32 | pos, so a range
--   join on (chrom, pos) is a single BETWEEN (DuckDB plans an IEJoin instead of a hash join).
-- polgen_ambiguous(a1, a2): strand-ambiguous SNP (A/T, T/A, C/G, G/C), any case.
-- polgen_log10p(p): -log10(p), +inf for p = 0, NULL for p < 0 or NULL.
-- polgen_valid_p(p): p is a probability (in [0, 1], not NaN; NULL for NULL).
-- chisq_from_p(p) (registered from Python): the 1-df chi-square quantile qchisq(1 - p, 1);
--   NULL for p outside [0, 1] or NaN, +inf for p = 0.
CREATE OR REPLACE TEMP MACRO polgen_chrom_label(c) AS
    CASE WHEN starts_with(upper(trim(CAST(c AS VARCHAR))), 'CHR')
         THEN substr(upper(trim(CAST(c AS VARCHAR))), 4)
         ELSE upper(trim(CAST(c AS VARCHAR))) END;
CREATE OR REPLACE TEMP MACRO polgen_chrom_code_of_label(l) AS
    CASE l WHEN 'X' THEN 23 WHEN 'Y' THEN 24 WHEN 'XY' THEN 25 WHEN 'MT' THEN 26 WHEN 'M' THEN 26
           ELSE TRY_CAST(l AS BIGINT) END;
CREATE OR REPLACE TEMP MACRO polgen_chrom_code(c) AS
    coalesce(TRY_CAST(c AS BIGINT), polgen_chrom_code_of_label(polgen_chrom_label(c)));
CREATE OR REPLACE TEMP MACRO polgen_genome_pos(c, pos) AS
    (polgen_chrom_code(c) << 32) | CAST(pos AS BIGINT);
CREATE OR REPLACE TEMP MACRO polgen_ambiguous(a1, a2) AS
    (upper(a1) || upper(a2)) IN ('AT', 'TA', 'CG', 'GC');
CREATE OR REPLACE TEMP MACRO polgen_log10p(p) AS
    CASE WHEN p > 0 THEN -log10(p) WHEN p = 0 THEN 'inf'::DOUBLE END;
CREATE OR REPLACE TEMP MACRO polgen_valid_p(p) AS
    p >= 0 AND p <= 1 AND NOT isnan(p);
