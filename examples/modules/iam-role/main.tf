data "aws_iam_policy_document" "trust" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = [var.service]
    }
  }
}

resource "aws_iam_role" "this" {
  name               = var.name
  assume_role_policy = data.aws_iam_policy_document.trust.json
}

data "aws_iam_policy_document" "read" {
  statement {
    sid       = "ListBuckets"
    actions   = ["s3:ListBucket"]
    resources = length(var.read_buckets) > 0 ? var.read_buckets : ["arn:aws:s3:::nothing-to-read"]
  }

  statement {
    sid       = "ReadObjects"
    actions   = ["s3:GetObject"]
    resources = length(var.read_buckets) > 0 ? [for arn in var.read_buckets : "${arn}/*"] : ["arn:aws:s3:::nothing-to-read/*"]
  }
}

resource "aws_iam_role_policy" "read" {
  name   = "${var.name}-read"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.read.json
}
